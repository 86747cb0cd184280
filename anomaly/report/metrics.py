"""Metric names as the report shows them, and a published number on the report's scale."""

from __future__ import annotations

import math

# titles and short names (a metric without one is shown by its own name)
METRIC_NAMES = {"auroc": "AUROC", "f1_paper": "F1 (the protocol paper's)", "f1": "F1 (anomalies positive)",
                "f1_inlier": "F1 (inliers positive)", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out",
                "fpr95": "FPR at 95 % TPR", "precision": "precision (anomalies positive)",
                "recall": "recall (anomalies positive)", "precision_inlier": "precision (inliers positive)",
                "recall_inlier": "recall (inliers positive)", "detection_error": "detection error",
                "threshold": "threshold"}
SHORT_NAMES = {"auroc": "AUROC", "f1_paper": "F1", "f1": "F1", "f1_inlier": "F1 inlier", "aupr_in": "AUPR-in",
               "aupr_out": "AUPR-out", "fpr95": "FPR95", "detection_error": "det. error"}
# metrics that lie in [0, 1] (a paper number above 1 is a percentage)
BOUNDED = {"auroc", "f1_paper", "f1", "f1_inlier", "aupr_in", "aupr_out", "fpr95", "precision", "recall",
           "precision_inlier", "recall_inlier", "detection_error"}


def paper_number(paper: dict, metric: str, resolved: str) -> float | None:
    """A published number of `metric` (or of the key it resolves to: `f1_paper` → `f1_inlier`),
    as a fraction where the metric lies in [0, 1] and the paper gave a percentage."""
    for key in dict.fromkeys((metric, resolved)):
        value = paper.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            value = float(value)
            return value / 100.0 if metric in BOUNDED and value > 1.0 else value
    return None

"""Metrics on anomaly scores (higher score = more anomalous, everywhere); the thresholds they
are taken at are fitted by `anomaly.evaluation.thresholds`.

Scores are arbitrary reals (log-densities, reconstruction errors). torchmetrics squashes
predictions outside [0, 1] through a sigmoid, which would tie large scores; the ranking metrics
therefore see normalised ranks (order-preserving, ties kept), and the thresholded metrics see
hard predictions.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_roc,
)

from anomaly.evaluation import METRIC_KEYS

__all__ = ["METRIC_KEYS", "compute_metrics", "detection_error", "nonsense_warnings", "ranks", "score_problem"]


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """Average ranks scaled to (0, 1], in float64: same order and ties as the scores."""
    s = scores.double()
    uniq, inverse = torch.unique(s, sorted=True, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(uniq)).double()
    last = torch.cumsum(counts, 0)
    avg_rank = last - (counts - 1) / 2
    return avg_rank[inverse] / len(s)


def detection_error(scores: torch.Tensor, anomalous: torch.Tensor) -> float:
    """GPND's detection error: the minimum over all thresholds (flag nothing and flag everything
    included; tied scores never split) of the mean of the two error rates, 0.5 · (FPR + FNR):
    normals flagged and anomalies missed. Threshold-free like AUROC, the same with either class
    positive. Needs both classes (NaN otherwise)."""
    s = scores.double().cpu().reshape(-1)
    a = anomalous.bool().cpu().reshape(-1)
    n_anom, n_norm = int(a.sum()), int((~a).sum())
    if n_anom == 0 or n_norm == 0:
        return math.nan
    order = torch.argsort(s, descending=True)
    s, a = s[order], a[order].double()
    zero = torch.zeros(1, dtype=torch.float64)
    flagged_anom = torch.cat([zero, torch.cumsum(a, 0)])  # cut k: the k highest scores flagged
    flagged_norm = torch.cat([zero, torch.cumsum(1 - a, 0)])
    valid = torch.ones(len(s) + 1, dtype=torch.bool)
    valid[1:-1] = s[:-1] > s[1:]
    error = 0.5 * (flagged_norm / n_norm + (n_anom - flagged_anom) / n_anom)
    return float(error[valid].min())


def compute_metrics(scores: torch.Tensor, anomalous: torch.Tensor, threshold: float) -> dict[str, float]:
    """All metrics of a test set. Ranking metrics need both classes; otherwise they are NaN."""
    scores = scores.double().cpu()
    target = anomalous.long().cpu()
    out = {k: math.nan for k in METRIC_KEYS}
    out["threshold"] = float(threshold)
    both = 0 < int(target.sum()) < len(target)
    if both:
        r = ranks(scores)
        out["auroc"] = float(binary_auroc(r, target))
        out["aupr_out"] = float(binary_average_precision(r, target))
        out["aupr_in"] = float(binary_average_precision(1 - r + 1 / len(r), 1 - target))
        # FPR at 95 % TPR, normals positive (the OOD convention GPND reports): the share of
        # anomalies accepted when 95 % of normals are accepted.
        fpr, tpr, _ = binary_roc(1 - r + 1 / len(r), 1 - target)
        out["fpr95"] = float(fpr[torch.nonzero(tpr >= 0.95)[0, 0]])
        out["detection_error"] = detection_error(scores, target)
    if math.isfinite(threshold):
        pred = (scores > threshold).long()
        out["f1"] = float(binary_f1_score(pred, target))
        out["precision"] = float(binary_precision(pred, target))
        out["recall"] = float(binary_recall(pred, target))
        out["f1_inlier"] = float(binary_f1_score(1 - pred, 1 - target))
        out["precision_inlier"] = float(binary_precision(1 - pred, 1 - target))
        out["recall_inlier"] = float(binary_recall(1 - pred, 1 - target))
    return out


def score_problem(scores: torch.Tensor) -> str | None:
    """Why a score vector cannot be evaluated (non-finite or constant), or None if it can."""
    if len(scores) == 0:
        return "no scores"
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        return f"{bad} of {len(scores)} scores are not finite (a diverged or collapsed model)"
    if torch.all(scores == scores[0]):
        return f"all {len(scores)} scores are equal ({float(scores[0]):g}): a collapsed model"
    return None


def nonsense_warnings(metrics: dict[str, float], problem: str | None, split: str = "validation") -> list[str]:
    """Lines that say a split's numbers mean nothing: unusable scores, or an AUROC below chance
    (the score ranks anomalies below normals: an inverted score, or a training that failed)."""
    if problem is not None:
        return [f"{split} scores: {problem}"]
    auroc = metrics.get("auroc", math.nan)
    if math.isfinite(auroc) and auroc < 0.5:
        return [f"{split} AUROC {auroc:.3f} is below chance (0.5): the score ranks anomalies below "
                "normals, so its F1 and threshold mean little"]
    return []

"""Thresholds and metrics on anomaly scores (higher score = more anomalous, everywhere).

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

from anomaly import AnomalyError

THRESHOLD_STRATEGIES = ("f1", "f1_inlier", "quantile", "contamination_quantile")
METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "f1", "f1_inlier", "fpr95", "precision", "recall",
               "precision_inlier", "recall_inlier", "threshold")


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Average ranks scaled to (0, 1], in float64: same order and ties as the scores."""
    s = scores.double()
    uniq, inverse = torch.unique(s, sorted=True, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(uniq)).double()
    last = torch.cumsum(counts, 0)
    avg_rank = last - (counts - 1) / 2
    return avg_rank[inverse] / len(s)


def check_contamination(contamination: float | None) -> float:
    """The contamination fraction of the `contamination_quantile` strategy, checked."""
    if contamination is None:
        raise AnomalyError("threshold.strategy=contamination_quantile needs threshold.contamination "
                           "(the expected share of anomalies, e.g. 0.03); protocol=contamination "
                           "supplies its own")
    if not 0.0 < float(contamination) < 1.0:
        raise AnomalyError(f"threshold.contamination={contamination} must be in (0, 1)")
    return float(contamination)


def fit_threshold(scores: torch.Tensor, anomalous: torch.Tensor, strategy: str = "f1",
                  quantile: float = 0.95, contamination: float | None = None,
                  unlabeled: torch.Tensor | None = None) -> float:
    """Threshold τ (predict anomalous when score > τ) fitted on validation scores.

    f1 / f1_inlier: maximise F1 with anomalies (resp. normals) as the positive class, over every
    cut between distinct scores; τ is the midpoint of the cut. Validation without anomalies, or
    strategy "quantile": the `quantile` of the normal scores.
    contamination_quantile (the VAE paper's): the (1 − `contamination`) quantile of the
    validation scores pooled with `unlabeled` (the training scores, when given); no labels are
    used, only the expected share of anomalies.
    """
    if strategy not in THRESHOLD_STRATEGIES:
        raise AnomalyError(f"threshold.strategy={strategy!r}; choose one of {THRESHOLD_STRATEGIES}")
    scores = scores.double().cpu()
    anomalous = anomalous.bool().cpu()
    if strategy == "contamination_quantile":
        contamination = check_contamination(contamination)
        if unlabeled is not None:
            scores = torch.cat([unlabeled.double().cpu().reshape(-1), scores])
        if len(scores) == 0 or not torch.isfinite(scores).all():
            return math.nan
        return float(torch.quantile(scores, 1.0 - contamination))
    if len(scores) == 0 or not torch.isfinite(scores).all():
        return math.nan
    if strategy == "quantile" or not anomalous.any():
        normal = scores[~anomalous]
        if len(normal) == 0:
            return math.nan
        return float(torch.quantile(normal, quantile))
    order = torch.argsort(scores, descending=True)
    s, a = scores[order], anomalous[order].double()
    # cut after position k (k+1 highest flagged); only where the next score differs
    tp = torch.cumsum(a, 0)
    k = torch.arange(1, len(s) + 1, dtype=torch.float64)
    fp = k - tp
    n_anom, n_norm = a.sum(), len(s) - a.sum()
    if strategy == "f1":
        f1 = 2 * tp / (k + n_anom)
    else:  # normals positive: the not-flagged are predicted normal
        tn = n_norm - fp  # normals not flagged = true positives of the inlier class
        predicted_normal = len(s) - k
        f1 = 2 * tn / (predicted_normal + n_norm)
    valid = torch.ones_like(f1, dtype=torch.bool)
    valid[:-1] = s[:-1] > s[1:]
    f1 = torch.where(valid, f1, torch.tensor(-1.0, dtype=torch.float64))
    best = int(torch.argmax(f1))
    if best == len(s) - 1:  # flag everything
        return float(s[-1]) - max(1.0, abs(float(s[-1]))) * 1e-6
    return float((s[best] + s[best + 1]) / 2)


def compute_metrics(scores: torch.Tensor, anomalous: torch.Tensor, threshold: float) -> dict[str, float]:
    """All metrics of a test set. Ranking metrics need both classes; otherwise they are NaN."""
    scores = scores.double().cpu()
    target = anomalous.long().cpu()
    out = {k: math.nan for k in METRIC_KEYS}
    out["threshold"] = float(threshold)
    both = 0 < int(target.sum()) < len(target)
    if both:
        r = _ranks(scores)
        out["auroc"] = float(binary_auroc(r, target))
        out["aupr_out"] = float(binary_average_precision(r, target))
        out["aupr_in"] = float(binary_average_precision(1 - r + 1 / len(r), 1 - target))
        # FPR at 95 % TPR, normals positive (the OOD convention GPND reports): the share of
        # anomalies accepted when 95 % of normals are accepted.
        fpr, tpr, _ = binary_roc(1 - r + 1 / len(r), 1 - target)
        out["fpr95"] = float(fpr[torch.nonzero(tpr >= 0.95)[0, 0]])
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

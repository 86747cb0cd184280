"""Thresholds fitted on validation scores (higher score = more anomalous; predict anomalous when
score > τ). One small class per rule, chosen by the `threshold` config group
(conf/threshold/<name>.yaml, `_target_` one of these classes); each protocol's config names its
paper's rule, and `threshold=<name>` on the command line overrides it.

Every rule checks its settings when it is built (a bad one fails before any data loads or any
training) and records, after `fit`, what it actually did: `used` (the rule's name, or the rule
it fell back to) and `reason` (None, or why it fell back).
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch

from anomaly import AnomalyError
from anomaly.distributed import process_rank

log = logging.getLogger("anomaly")

F1_POSITIVES = ("anomalous", "normal")


def check_fraction(key: str, value: object) -> float:
    """A setting that must be a number strictly between 0 and 1, checked; `key` names it."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AnomalyError(f"{key}={value!r} must be a number in (0, 1)") from None
    if isinstance(value, bool) or not 0.0 < number < 1.0:
        raise AnomalyError(f"{key}={value} must be in (0, 1)")
    return number


def _margin(score: float) -> float:
    """How far beyond the extreme score τ goes at the ends of the search (flag nothing / all)."""
    return max(1.0, abs(score)) * 1e-6


def _between(low: float, high: float) -> float:
    """A τ with low ≤ τ < high (the midpoint; `low` where the midpoint rounds onto `high`), so
    that `score > τ` flags `high` and not `low`."""
    mid = low + (high - low) / 2
    return mid if low <= mid < high else low


class Threshold:
    """Base of the threshold rules. `fit(scores, anomalous, unlabeled)` returns τ; afterwards
    `used` and `reason` say what it did. `uses_unlabeled`: the rule pools the training scores
    (the post-processor scores the training set for it in the stand-alone validation after fit,
    `anomaly.evaluation.post_processor`)."""

    name: ClassVar[str] = "threshold"
    uses_unlabeled: ClassVar[bool] = False

    def __init__(self) -> None:
        self.used: str | None = None
        self.reason: str | None = None
        self._warned: str | None = None

    def fit(self, scores: torch.Tensor, anomalous: torch.Tensor,
            unlabeled: torch.Tensor | None = None) -> float:
        scores = scores.double().cpu().reshape(-1)
        anomalous = anomalous.bool().cpu().reshape(-1)
        if len(scores) != len(anomalous):
            raise AnomalyError(f"threshold={self.name}: {len(scores)} scores but {len(anomalous)} labels")
        if unlabeled is not None:
            unlabeled = unlabeled.double().cpu().reshape(-1)
        self.used, self.reason = self.name, None
        tau = self._fit(scores, anomalous, unlabeled)
        if not math.isfinite(tau):
            self.used = None  # nothing was fitted
        if self.reason is not None and self.reason != self._warned:  # one line per new reason
            self._warned = self.reason
            if process_rank() == 0:  # under DDP every rank fits the same gathered scores
                log.warning("threshold=%s: %s; %s", self.name, self.reason,
                            f"used {self.used}" if self.used else "no threshold fitted")
        return tau

    def _fit(self, scores: torch.Tensor, anomalous: torch.Tensor,
             unlabeled: torch.Tensor | None) -> float:
        raise NotImplementedError

    def record(self) -> dict:
        """What results.json reports: the configured rule, the one used and why they differ."""
        return {"configured": self.name, "used": self.used, "reason": self.reason}

    def _normal_quantile(self, scores: torch.Tensor, anomalous: torch.Tensor, quantile: float) -> float:
        """The `quantile` of the normal scores (NaN, with the reason recorded, without any)."""
        normal = scores[~anomalous]
        if len(normal) == 0:
            self.reason = "validation has no normals"
            return math.nan
        return float(torch.quantile(normal, quantile))

    def _check_usable(self, scores: torch.Tensor) -> bool:
        """Whether τ can be fitted on these scores; if not, the reason is recorded."""
        if len(scores) == 0:
            self.reason = "no validation scores"
        elif not torch.isfinite(scores).all():
            self.reason = "validation scores are not finite"
        return self.reason is None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class QuantileThreshold(Threshold):
    """τ = the `quantile` of the validation normals' scores (no anomalies needed)."""

    name = "quantile"

    def __init__(self, quantile: float = 0.95) -> None:
        super().__init__()
        self.quantile = check_fraction("threshold.quantile", quantile)

    def _fit(self, scores, anomalous, unlabeled):
        if not self._check_usable(scores):
            return math.nan
        return self._normal_quantile(scores, anomalous, self.quantile)


class F1Threshold(Threshold):
    """τ maximising F1 on validation, with anomalies (`positive="anomalous"`, name `f1`) or
    normals (`positive="normal"`, name `f1_inlier`: GPND / ARAE's convention) as the positive
    class.

    Every cut is searched: between each pair of neighbouring distinct scores (τ = their
    midpoint; tied scores are never split), flag nothing (τ = max + margin) and flag everything
    (τ = min − margin). Where several cuts share the best F1 the one flagging fewest wins.
    Validation without anomalies: the `fallback_quantile` of the normals' scores (recorded as
    used="quantile"); without normals: everything is flagged.
    """

    def __init__(self, positive: str = "anomalous", fallback_quantile: float = 0.95) -> None:
        super().__init__()
        if positive not in F1_POSITIVES:
            raise AnomalyError(f"threshold.positive={positive!r} must be one of {F1_POSITIVES}")
        self.positive = positive
        self.fallback_quantile = check_fraction("threshold.fallback_quantile", fallback_quantile)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "f1" if self.positive == "anomalous" else "f1_inlier"

    def _fit(self, scores, anomalous, unlabeled):
        if not self._check_usable(scores):
            return math.nan
        if not anomalous.any():
            self.used, self.reason = QuantileThreshold.name, "validation has no anomalies"
            return self._normal_quantile(scores, anomalous, self.fallback_quantile)
        if anomalous.all():
            self.reason = "validation has no normals: everything flagged"
            return float(scores.min()) - _margin(float(scores.min()))
        return best_f1_cut(scores, anomalous, self.positive)[0]


def f1_per_cut(scores: torch.Tensor, anomalous: torch.Tensor, positive: str = "anomalous"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted scores, F1 per cut, whether the cut is valid) for every cut k = 0…n: the k highest
    scores flagged. A cut is valid at both ends and where it falls between distinct scores.
    F1 with a zero denominator (nothing predicted nor present of the positive class) is 0."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, a = scores[order], anomalous[order].double()
    n = len(s)
    k = torch.arange(n + 1, dtype=torch.float64)
    tp = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(a, 0)])  # anomalies flagged
    fp = k - tp  # normals flagged
    n_anom = a.sum()
    n_norm = n - n_anom
    if positive == "anomalous":
        num, den = 2 * tp, k + n_anom
    else:  # normals positive: the not-flagged are predicted normal
        num, den = 2 * (n_norm - fp), (n - k) + n_norm
    f1 = torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[:-1] > s[1:]
    return s, f1, valid


def best_f1_cut(scores: torch.Tensor, anomalous: torch.Tensor, positive: str = "anomalous") -> tuple[float, float]:
    """(τ, F1) of the best valid cut (see f1_per_cut); ties: the cut flagging fewest."""
    s, f1, valid = f1_per_cut(scores.double(), anomalous.bool(), positive)
    f1 = torch.where(valid, f1, torch.tensor(-1.0, dtype=torch.float64))
    best = int(torch.argmax(f1))  # the first maximum: fewest flagged
    n = len(s)
    if best == 0:  # flag nothing
        tau = float(s[0]) + _margin(float(s[0]))
    elif best == n:  # flag everything
        tau = float(s[-1]) - _margin(float(s[-1]))
    else:
        tau = _between(float(s[best]), float(s[best - 1]))
    return tau, float(f1[best])


class ContaminationQuantile(Threshold):
    """The VAE paper's: τ = the (1 − `contamination`) quantile of the validation scores pooled
    with the training scores (`unlabeled`); no labels are used, only the expected share of
    anomalies. `contamination` comes from protocol.contamination where the protocol has one."""

    name = "contamination_quantile"
    uses_unlabeled = True

    def __init__(self, contamination: float | None = None) -> None:
        super().__init__()
        if contamination is None:
            raise AnomalyError("threshold=contamination_quantile needs threshold.contamination (the "
                               "expected share of anomalies, e.g. 0.03); protocol=contamination "
                               "supplies its own")
        self.contamination = check_fraction("threshold.contamination", contamination)

    def _fit(self, scores, anomalous, unlabeled):
        if unlabeled is not None:
            scores = torch.cat([unlabeled, scores])
        if not self._check_usable(scores):
            return math.nan
        return float(torch.quantile(scores, 1.0 - self.contamination))

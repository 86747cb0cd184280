"""The metrics, a component of a method's module (anomalib's Evaluator is the model): on each
scored validation split, at the threshold the post-processor fitted on it (what model selection and
sweepers may use), and on the scored test split (what results.json reports); logged as `val/…`
and `test/…`, with a warning where the validation numbers mean nothing.

`anomaly.pipeline.build_method` attaches one; a module built directly has one too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn

from anomaly.evaluation.gather import ScoredSplit
from anomaly.evaluation.metrics import compute_metrics, nonsense_warnings, score_problem

log = logging.getLogger(__name__)


class Evaluator:
    """The validation and test metrics of a module, and why a split has none (`*_problem`)."""

    def __init__(self) -> None:
        self.val_metrics: dict[str, float] = {}
        self.val_problem: str | None = None
        self.test_metrics: dict[str, float] = {}
        self.test_problem: str | None = None

    def attach(self, module: torch.nn.Module) -> Evaluator:
        """Make this the module's evaluator (`module.evaluator`)."""
        module.evaluator = self
        return self

    # ---- called by the module's hooks with its gathered scores -------------------------------------
    def on_validation_start(self, module: Any) -> None:
        pass

    def on_validation_scored(self, module: Any, split: ScoredSplit) -> None:
        self.validation(split, module.post_processor.value)
        normal = split.score[~split.anomalous]
        if len(normal):
            module.log("val/score_normal", normal.mean().item())
        if math.isfinite(self.val_metrics.get("auroc", math.nan)):
            module.log("val/auroc", self.val_metrics["auroc"], prog_bar=True)
        if module.trainer.state.fn == TrainerFn.VALIDATING:  # the validation the threshold comes from
            self.warn_if_nonsense(module.name)

    def on_test_scored(self, module: Any, split: ScoredSplit) -> None:
        self.test(split, module.post_processor.value)
        for key, value in self.test_metrics.items():
            module.log(f"test/{key}", value)

    # ---- scored splits → metrics (also used on cached scores: anomaly.reproduce) --------------------
    def validation(self, split: ScoredSplit, threshold: float) -> None:
        """The metrics of a scored validation split at the threshold fitted on it."""
        self.val_problem = score_problem(split.score)
        self.val_metrics = ({} if self.val_problem is not None
                            else compute_metrics(split.score, split.anomalous, threshold))

    def warn_if_nonsense(self, method: str) -> None:
        """Warn where the validation numbers mean nothing (see nonsense_warnings)."""
        for line in nonsense_warnings(self.val_metrics, self.val_problem):
            log.warning(f"method={method}: {line}")

    def test(self, split: ScoredSplit, threshold: float) -> None:
        """The test metrics of a scored test split at the fitted threshold."""
        self.test_problem = score_problem(split.score)
        if self.test_problem is not None:  # metrics of such scores would mean nothing
            self.test_metrics = {}
            return
        if not math.isfinite(threshold):
            self.test_problem = "no validation threshold was fitted: thresholded metrics are NaN"
        self.test_metrics = compute_metrics(split.score, split.anomalous, threshold)

    def on_save_checkpoint(self, info: dict[str, Any]) -> None:
        pass

    def on_load_checkpoint(self, info: dict[str, Any]) -> None:
        pass

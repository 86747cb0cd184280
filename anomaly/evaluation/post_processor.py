"""The threshold, a component of a method's module (anomalib's PostProcessor is the model): a rule
of `anomaly.evaluation.thresholds` fitted on the validation scores, then applied to label scores
(True = anomalous: score > threshold, PyOD's convention).

`anomaly.pipeline.build_method` attaches one with the run's rule (the `threshold` config group);
a module built directly has one with the default rule (F1, anomalies positive). The fitted value
is the module's `threshold` buffer (float64), so it moves with the module and is saved in its
checkpoints under the key it always had; what the fit did (`fit_record`: the rule configured, the
one used and why they differ) is saved under the checkpoint's `anomaly.threshold_fit`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn

from anomaly import AnomalyError
from anomaly.evaluation.gather import ScoredSplit
from anomaly.evaluation.thresholds import F1Threshold, Threshold


class PostProcessor:
    """The module's threshold: `rule` (None: F1 with anomalies positive) fitted at the end of every
    validation epoch. A rule that pools the training scores (contamination_quantile) gets them in
    the stand-alone validation after fit (the validation inside fit uses validation alone)."""

    def __init__(self, rule: Threshold | None = None) -> None:
        if rule is None:
            rule = F1Threshold()
        if not isinstance(rule, Threshold):
            raise AnomalyError(f"threshold={rule!r} is not a threshold rule "
                               "(anomaly.evaluation.thresholds.Threshold)")
        self.rule = rule
        self.fit_record: dict = rule.record()  # what the fitted threshold is
        self.train_scores: torch.Tensor | None = None  # for a rule that pools them
        self.module: Any = None

    def attach(self, module: torch.nn.Module) -> PostProcessor:
        """Make this the module's post-processor (`module.post_processor`). The module's
        `threshold` buffer (NaN: not fitted) is made where it has none, kept where it has one."""
        if "threshold" not in module._buffers:
            module.register_buffer("threshold", torch.tensor(math.nan, dtype=torch.float64))
        module.post_processor = self
        self.module = module
        return self

    @property
    def value(self) -> float:
        """The fitted threshold (NaN before a fit)."""
        return float(self.module.threshold)

    # ---- fitting --------------------------------------------------------------------------------
    def on_validation_start(self, module: Any) -> None:
        """Before the validation batches: the training scores for a rule that pools them, in the
        stand-alone validation (after the module has fitted its score statistics)."""
        self.train_scores = None
        trainer = module.trainer
        if (trainer.state.fn == TrainerFn.VALIDATING and trainer.datamodule is not None
                and self.rule.uses_unlabeled):
            self.train_scores = torch.cat([
                module.score(b["image"]).detach().float().reshape(-1).cpu()
                for b in module.device_batches(trainer.datamodule.train_eval_dataloader())])

    def on_validation_scored(self, module: Any, split: ScoredSplit) -> None:
        self.fit(split, self.train_scores)

    def on_test_scored(self, module: Any, split: ScoredSplit) -> None:
        pass

    def fit(self, split: ScoredSplit, train_scores: torch.Tensor | None = None) -> float:
        """Fit the threshold on a scored validation split (`train_scores`: for rules that pool them)."""
        self.module.threshold.fill_(self.rule.fit(split.score, split.anomalous, unlabeled=train_scores))
        self.fit_record = self.rule.record()
        return self.value

    # ---- applying -------------------------------------------------------------------------------
    def is_anomalous(self, scores: torch.Tensor) -> torch.Tensor:
        """True where a score is above the fitted threshold (higher = more anomalous), compared in
        float64 as the threshold is kept."""
        threshold = self.value
        if not math.isfinite(threshold):
            raise AnomalyError(f"method={self.module.name}: no validation threshold was fitted, so images "
                               "cannot be labelled (anomaly.evaluate refit_threshold=true fits one)")
        return scores.detach().double().cpu() > threshold

    # ---- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, info: dict[str, Any]) -> None:
        info["threshold_fit"] = dict(self.fit_record)

    def on_load_checkpoint(self, info: dict[str, Any]) -> None:
        self.restore(info.get("threshold_fit"))

    def restore(self, record: dict | None) -> None:
        """The fit record of a loaded checkpoint's threshold (one written before the records
        were kept has none: the configured rule, used unknown)."""
        self.fit_record = {"configured": self.rule.name, "used": None, "reason": None, **(record or {})}

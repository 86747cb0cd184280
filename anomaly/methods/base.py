"""What every method does the same way: input scaling, the scoring loops of validation, test and
predict, and checkpoint identity.

A method subclasses `AnomalyModule` and adds only its networks, its training step(s) and
`score(x)` (per-sample, higher = more anomalous). Its hyper-parameters are the typed parameters
of its `__init__`, each with its default (`nu: Nu = 0.1`, `jacobian: Literal["generator",
"encoder"] = "generator"`): that signature is their one declaration, checked when the config is
composed (anomaly.config_schema, anomaly.settings), so `__init__` takes the values as given. The scored splits go to the module's components
(`anomaly.evaluation`): its `post_processor` fits the threshold on validation and labels scores
with it, its `evaluator` takes the metrics; `anomaly.pipeline.build_method` attaches them.

`predict(images)` labels images (True = anomalous: score > threshold, PyOD's convention) and
`predict_step` does the same in `Trainer.predict`, gathered over ranks into `predictions`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Iterator, Literal, Sequence, get_args

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn

from anomaly import AnomalyError
from anomaly.evaluation.evaluator import Evaluator
from anomaly.evaluation.gather import Predicted, ScoredSplit, gather_rows
from anomaly.evaluation.post_processor import PostProcessor
from anomaly.rng import ValidationRNG

log = logging.getLogger(__name__)

# the inputs' range: unit [0, 1], symmetric [-1, 1]
ValueRange = Literal["unit", "symmetric"]
VALUE_RANGES = dict(zip(get_args(ValueRange), ((0.0, 1.0), (-1.0, 1.0))))


class AnomalyModule(L.LightningModule):
    """Base LightningModule of every method.

    image_shape: (C, H, W) of the inputs. value_range: "unit" ([0, 1]) or "symmetric" ([-1, 1]);
    batches arrive as uint8 and are scaled on the device. Its components (`post_processor`,
    `evaluator`: defaults until the pipeline attaches the run's) get every gathered split.
    """

    name: ClassVar[str] = "base"

    def __init__(self, image_shape: Sequence[int], value_range: ValueRange = "unit") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.image_shape = check_image_shape(image_shape, self.name)
        self.value_range = value_range
        self.post_processor: PostProcessor = PostProcessor().attach(self)
        self.evaluator: Evaluator = Evaluator().attach(self)
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints
        self.config_hash: str | None = None  # stored in checkpoints: how ckpt_path=last finds them
        self.data_fingerprint: dict | None = None  # likewise: a resume needs the same images too
        self._store: list[dict[str, torch.Tensor]] = []
        self.val_scores: ScoredSplit | None = None
        self.test_scores: ScoredSplit | None = None
        self.predictions: Predicted | None = None  # of the last Trainer.predict
        # this training batch's values logged under train/ (cleared by StopOnNonFiniteLoss)
        self.logged_train_values: dict[str, torch.Tensor] = {}
        self._validation_rng = ValidationRNG()  # the forked generators of a validation inside fit
        # set by the progress bar (anomaly.callbacks.progress.ProgressBar) while a val / test batch is scored
        self.scoring_progress: Any = None

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """LightningModule.log, keeping the tensors logged under `train/` for the non-finite check
        (`anomaly.callbacks.non_finite.StopOnNonFiniteLoss`), which reads them on the device."""
        if name.startswith("train/") and isinstance(value, torch.Tensor):
            self.logged_train_values[name] = value
        super().log(name, value, *args, **kwargs)

    @property
    def components(self) -> tuple[Any, ...]:
        """What gets the gathered scores, in order: the post-processor (the threshold), then the
        evaluator (metrics at that threshold)."""
        return self.post_processor, self.evaluator

    # ---- what a method provides -------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample anomaly score of a float batch in the method's value range (higher = more
        anomalous)."""
        raise NotImplementedError

    def report_scoring(self, done: int, total: int) -> None:
        """For a method whose score() takes long per batch (GPND's Jacobians: a minute per CPU
        batch): how far it is within the batch, shown by the evaluation progress bar."""
        if self.scoring_progress is not None:
            self.scoring_progress(done, total)

    def prepare_scoring(self, train_loader) -> None:
        """Fit score statistics on the training images after training (GPND's densities…).
        Called once before the final validation; the default needs none."""

    def follow_stage_epochs(self, **stages: int) -> None:
        """For a method that trains its stages in one run (f-AnoGAN, Deep SVDD): the trainer runs
        their sum of epochs, whatever a Trainer of the caller's own was given (the configs are
        checked before: `anomaly.config_schema.check_stage_epochs`)."""
        total = sum(stages.values())
        loop = self.trainer.fit_loop
        if loop.max_epochs != total:
            log.warning(
                "%s trains %s = %d epochs; trainer.max_epochs=%s is replaced by %d", self.name,
                " + ".join(f"method.{k} ({v})" for k, v in stages.items()), total, loop.max_epochs, total)
            loop.max_epochs = total

    # ---- the schedule in stages: what a compute budget (anomaly.cost) shortens ----------------------
    # stage → the setting that holds its epochs, in training order; lr milestones (method
    # attributes, in epochs of their stage) → their stage
    stage_settings: ClassVar[dict[str, str]] = {"train": "trainer.max_epochs"}
    milestone_settings: ClassVar[dict[str, str]] = {}
    # training batches after which a step's FLOPs repeat (f-AnoGAN: one generator update per cycle)
    flop_cycle: int = 1
    # why a method chose something with labelled validation anomalies (None: it chose nothing so)
    labelled_selection: str | None = None

    @property
    def training_stage(self) -> str:
        """The stage the current epoch trains (a key of `stage_settings`)."""
        return "train"

    def rescale_schedule(self, epochs: dict[str, tuple[int, float]]) -> None:
        """Each stage (→ its scheduled epochs, the epochs it gets) shortened to what it gets; its
        lr milestones keep their place as fractions of it (budget-aware training, Li et al. 2020)."""
        for stage, key in self.stage_settings.items():
            if key.startswith("method.") and stage in epochs:
                setattr(self, key.split(".", 1)[1], math.ceil(epochs[stage][1]))
        for attr, stage in self.milestone_settings.items():
            old, new = epochs.get(stage, (0, 0))
            if old:
                setattr(self, attr, [max(1, round(m * new / old)) for m in getattr(self, attr)])

    def untracked_training_flops(self) -> float:
        """FLOPs of training work outside torch's operators (the OC-SVM's libsvm fit), estimated;
        torch's own are counted by `anomaly.cost.TrainingCost`."""
        return 0.0

    def manual_step(self, optimizer, loss: torch.Tensor) -> None:
        """One update of one optimiser, for methods with manual optimisation (GANs alternating
        several optimisers): zero its gradients, backward through Lightning, step."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        """The method's reconstruction of a float batch, for the examples plot (None: it has none)."""
        return None

    @torch.no_grad()
    def examples(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(inputs, reconstructions) in [0, 1] for uint8 images (reconstructions None for a method
        without them)."""
        was_training = self.training
        self.eval()
        x = self.to_value_range(images.to(self.device))
        recon = self.reconstruct(x)
        self.train(was_training)
        low, high = VALUE_RANGES[self.value_range]
        to_unit = lambda t: ((t - low) / (high - low)).clamp(0, 1).cpu()  # noqa: E731
        return to_unit(x), None if recon is None else to_unit(recon)

    # ---- inputs ------------------------------------------------------------------------------
    @property
    def output_activation(self) -> str:
        """The decoder activation that matches the value range."""
        return "sigmoid" if self.value_range == "unit" else "tanh"

    def to_value_range(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 255.0  # one pass uint8 → float32, bit-equal to images.float() / 255.0
        return x if self.value_range == "unit" else x * 2.0 - 1.0

    def clamp_to_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = VALUE_RANGES[self.value_range]
        return x.clamp(low, high)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and batch["image"].dtype == torch.uint8:
            batch = {**batch, "image": self.to_value_range(batch["image"])}
        return batch

    # ---- scoring loops -------------------------------------------------------------------------
    def _collect(self, batch: dict[str, torch.Tensor]) -> None:
        scores = self.score(batch["image"]).detach().float().reshape(-1)
        self._store.append({"score": scores, "anomalous": batch["anomalous"],
                            "label": batch["label"], "index": batch["index"]})

    def _gather(self) -> ScoredSplit:
        return ScoredSplit(**self._gather_store("no batches were scored (is limit_val_batches / "
                                                "limit_test_batches 0?)"))

    def _gather_store(self, empty: str, uneven: bool = False) -> dict[str, torch.Tensor]:
        """The stored batches, gathered over ranks (`anomaly.evaluation.gather.gather_rows`)."""
        rows, self._store = self._store, []
        return gather_rows(self, rows, empty, uneven)

    def on_validation_start(self) -> None:
        # validation inside fit draws from a fork of the generators: it never changes the training
        self._validation_rng.start(self)
        # Only the stand-alone validation after fit (and evaluate's refit) fits score statistics:
        # validation inside fit (callbacks.validation_cadence) scores with whatever the method has.
        if self.trainer.state.fn == TrainerFn.VALIDATING and self.trainer.datamodule is not None:
            self.prepare_scoring(self.device_batches(self.trainer.datamodule.train_eval_dataloader()))
        for component in self.components:
            component.on_validation_start(self)

    def device_batches(self, loader) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of a loader on this module's device, scaled as in the training loop."""
        for batch in loader:
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            yield self.on_after_batch_transfer(batch, 0)

    def on_validation_end(self) -> None:
        self._validation_rng.end()  # back to the training's own stream

    def on_validation_epoch_start(self) -> None:
        self._store = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._store = []
            return
        self.val_scores = self._gather()
        for component in self.components:
            component.on_validation_scored(self, self.val_scores)

    def on_test_epoch_start(self) -> None:
        self._store = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self.test_scores = self._gather()
        for component in self.components:
            component.on_test_scored(self, self.test_scores)

    # ---- predictions: images of no split, labelled by the post-processor -------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels of one batch of images (bool: True = anomalous, score > threshold); `score`
        gives the scores. images: uint8 B×C×H×W as the datasets hold them (scaled here), or a
        float batch already in the method's value range."""
        was_training = self.training
        self.eval()
        try:
            x = images.to(self.device)
            x = self.to_value_range(x) if x.dtype == torch.uint8 else x
            return self.post_processor.is_anomalous(self.score(x).float().reshape(-1))
        finally:
            self.train(was_training)

    def on_predict_epoch_start(self) -> None:
        self._store = []
        self.predictions = None

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """{"score", "anomalous"} of a batch: a dict with `image` (uint8 scaled on transfer) and
        `index` (the images' positions: predictions are gathered over ranks by it), or a plain
        image tensor."""
        images = batch["image"] if isinstance(batch, dict) else batch
        if images.dtype == torch.uint8:  # a plain tensor is not scaled on transfer
            images = self.to_value_range(images)
        scores = self.score(images).detach().float().reshape(-1)
        out = {"score": scores, "anomalous": self.post_processor.is_anomalous(scores).to(scores.device)}
        if isinstance(batch, dict) and "index" in batch:
            self._store.append({**out, "index": batch["index"]})
        return out

    def on_predict_epoch_end(self) -> None:
        if not self._store and self.trainer is not None and self.trainer.world_size > 1:
            # fewer images than ranks leaves a rank none: it still takes part in the gather
            self._store = [{"score": torch.empty(0, device=self.device),
                            "anomalous": torch.empty(0, dtype=torch.bool, device=self.device),
                            "index": torch.empty(0, dtype=torch.long, device=self.device)}]
        if self._store:
            self.predictions = Predicted(**self._gather_store(
                "no batches were predicted (is limit_predict_batches 0?)", uneven=True))

    # ---- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["anomaly"] = {"method": self.name, "image_shape": list(self.image_shape),
                                 "config": self.run_config, "config_hash": self.config_hash,
                                 "data_fingerprint": self.data_fingerprint}
        for component in self.components:  # the threshold's fit record (`threshold_fit`)
            component.on_save_checkpoint(checkpoint["anomaly"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_identity(checkpoint, self.name, self.image_shape)
        for component in self.components:
            component.on_load_checkpoint(checkpoint["anomaly"])


def real_fake_bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The GAN losses' BCE on discriminator logits against an all-real (1) or all-fake (0) target,
    averaged over every logit."""
    logits = logits.reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits) if real else torch.zeros_like(logits))


def check_image_shape(image_shape: Sequence[int], method: str) -> tuple[int, int, int]:
    """(C, H, W) as ints; refuses what no method's networks take (the networks check their sizes)."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise AnomalyError(f"method={method}: image shape {shape} must be C×H×W with positive sizes")
    if shape[1] != shape[2]:
        # every loader makes squares (dataset.image_size) and the conv nets are built for them
        raise AnomalyError(f"method={method}: images of {shape[1]}×{shape[2]} are not square; the "
                           "networks take square images: set dataset.image_size (e.g. 32)")
    return shape  # type: ignore[return-value]


def check_checkpoint_identity(checkpoint: dict[str, Any], method: str,
                              image_shape: Sequence[int] | None = None, path: str = "checkpoint") -> None:
    """Refuse a checkpoint written by another method or for another image shape."""
    info = checkpoint.get("anomaly") if isinstance(checkpoint, dict) else None
    if not isinstance(info, dict) or "method" not in info:
        raise AnomalyError(f"{path} was not written by anomaly (no 'anomaly' entry)")
    if info["method"] != method:
        raise AnomalyError(f"{path} holds a '{info['method']}' model, not '{method}'")
    if image_shape is not None and tuple(info.get("image_shape", ())) != tuple(image_shape):
        raise AnomalyError(f"{path} was trained on images of shape {tuple(info['image_shape'])}, "
                           f"not {tuple(image_shape)}")

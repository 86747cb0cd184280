"""Lightning callbacks for unattended runs (`conf/callbacks/default.yaml`).

- `StopOnNonFiniteLoss`: ends training at the first batch whose loss, or any value logged under
  `train/`, or any weight is NaN or infinite, with an `AnomalyError` naming the method, the epoch,
  batch and global step, and the loss terms (or the networks whose weights overflowed). It works
  from what every method already does (return its loss or `self.log("train/…")` its terms), so
  GANs with manual optimisation are covered without code of their own. A diverged network never
  recovers; training on would only waste the job's time and then score with NaN weights.
- `anomaly.rng.ResumableRNG` (with the rest of the random generators' handling): the
  generators' states in every checkpoint, back when training resumes from one.
- The bookkeeping around the steps, on a cadence so that it stays a few percent of training
  (GPU steps take milliseconds): `EpochEndCheckpoint` (at most every few minutes), and
  `ValidationCadence` (about every 200 batches), `ProgressBar` (its numbers read once a second).
- `StopAtEpochEnd`: SIGTERM or SIGINT (Ctrl-C) during training finishes the epoch in progress,
  writes its epoch-end checkpoint and ends the run (`RunInterrupted`, saying what is kept); a
  second signal ends it at once (outside training: `anomaly.stop_signals.stop_at_once`).

No callback reads a device value on the host in a training step: on a GPU such a read waits for
every queued kernel (tests/helpers/syncs.py counts them).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from typing import Any, Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from anomaly import AnomalyError, RunInterrupted
from anomaly.stop_signals import handle_stop_signals, restore_handlers

log = logging.getLogger("anomaly")


class StopOnNonFiniteLoss(L.Callback):
    """Raise an AnomalyError at the first non-finite training loss or weight (see the module
    docstring), without making the device wait for the host on any training step.

    After each batch it reduces the batch's losses (the returned loss and the values the method
    logged under `train/`, see `AnomalyModule.log`) and, with `check_weights`, every parameter
    (`_weights_finite`: a GAN whose update overflowed has NaN weights before any logged loss shows
    it) to two flags, kept on the device in a ring of `check_every_n_steps` batches. Every that many
    batches (None: the trainer's `log_every_n_steps`, when Lightning reads the logged values on
    the host anyway), before a validation or checkpoint inside fit and at the end of training, one
    read of the ring tells whether any batch since the last read went non-finite; the error names
    the first such batch. When a method's own code fails on a diverged network first (BCE refuses
    NaN inputs, for one), `on_exception` leaves a diagnosis on the exception that
    `anomaly.pipeline` reports instead of the traceback.
    """

    def __init__(self, check_weights: bool = True, check_every_n_steps: int | None = None) -> None:
        if check_every_n_steps is not None and int(check_every_n_steps) < 1:
            raise AnomalyError(f"callbacks.stop_on_non_finite_loss.check_every_n_steps={check_every_n_steps}: "
                               "need at least 1 (or null: trainer.log_every_n_steps)")
        self.check_weights = bool(check_weights)
        self.check_every_n_steps = None if check_every_n_steps is None else int(check_every_n_steps)
        self._flags: torch.Tensor | None = None  # [ring, 2]: losses finite, weights finite
        self._batches: list[tuple[int, int, int, list[tuple[str, torch.Tensor]]]] = []

    def _ring_size(self, trainer: L.Trainer) -> int:
        return self.check_every_n_steps or max(1, int(trainer.log_every_n_steps))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        logged = getattr(pl_module, "logged_train_values", None)
        if logged is not None:
            logged.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        values = _batch_losses(pl_module, outputs)
        params = [p.detach() for p in pl_module.parameters()] if self.check_weights else []
        if not values and not params:
            return
        device = (values[0][1] if values else params[0]).device
        size = self._ring_size(trainer)
        if self._flags is None or self._flags.device != device or len(self._flags) != size:
            self.read(trainer, pl_module)  # what the old ring holds, before it is replaced
            self._flags = torch.ones(size, 2, dtype=torch.bool, device=device)
        slot = self._flags[len(self._batches)]
        # all on the device: no value is read on the host here
        if values:
            slot[0].copy_(torch.cat([v.detach().reshape(-1).float() for _, v in values]).isfinite().all())
        if params:
            slot[1].copy_(_weights_finite(params))
        self._batches.append((trainer.current_epoch, batch_idx, trainer.global_step,
                              [(name, v.detach()) for name, v in values]))
        if len(self._batches) == size:
            self.read(trainer, pl_module)

    def read(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One host read of the flags since the last read; raises at the first bad batch."""
        if self._flags is None or not self._batches:
            return
        flags, batches = self._flags[:len(self._batches)], self._batches
        self._batches = []
        if bool(flags.all()):
            return
        first = int((~flags.all(dim=1)).nonzero()[0, 0])  # the error path: host reads are fine now
        epoch, batch_idx, step, values = batches[first]
        bad = [(name, v) for name, v in values if not bool(torch.isfinite(v).all())]
        if len(bad) > 1:  # the returned loss is usually logged as train/loss too: name it once
            bad = [(name, v) for name, v in bad if name != "loss"]
        if bad:
            what = "non-finite training loss"
            detail = ", ".join(f"{name}={_describe(v)}" for name, v in bad)
        else:
            what = "non-finite weights"
            losses = ", ".join(f"{name}={float(v.float().reshape(-1)[0]):.4g}" for name, v in values)
            detail = (f"in {', '.join(_non_finite_networks(pl_module)) or 'its networks'} after this "
                      f"batch's update" + (f" (its losses: {losses})" if losses else ""))
        raise AnomalyError(f"{_where(pl_module, epoch, batch_idx, step, what)}: {detail}; the training "
                           f"diverged: {_hint(pl_module)}")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training or getattr(trainer.state, "fn", None) == TrainerFn.FITTING:
            self.read(trainer, pl_module)  # no scores, threshold or curve point of a diverged model

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.read(trainer, pl_module)  # never a checkpoint of diverged weights

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.training or not isinstance(exception, Exception) or isinstance(exception, AnomalyError):
            return
        try:  # an earlier batch that went non-finite is the cause: name it
            self.read(trainer, pl_module)
        except AnomalyError as diverged:
            exception.anomaly_diagnosis = str(diverged)
            return
        networks = _non_finite_networks(pl_module)
        if not networks:  # finite weights: a failure of its own, reported as it is
            return
        step = _method_frame(exception, pl_module)
        batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        exception.anomaly_diagnosis = (
            f"{_where(pl_module, trainer.current_epoch, batch_idx, trainer.global_step, 'non-finite weights')}: "
            f"in {', '.join(networks)}; {step or 'training'} then failed ({type(exception).__name__}: "
            f"{_first_line(exception)}); the training diverged: {_hint(pl_module)}")


def _weights_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """Whether every weight is finite, as a device tensor (no host read). On a GPU one fused
    max-norm over all tensors; on a CPU, where that norm costs 10× a sum (11 ms a step for ARAE's
    COIL-100 MLP), one sum per tensor: non-finite exactly when a weight is NaN or infinite (or a
    tensor's weights add up beyond float32's range, ~3e38: a network no step can compute with)."""
    if params[0].device.type == "cuda":
        return torch.stack(torch._foreach_norm(params, ord=float("inf"))).isfinite().all()
    return torch.stack([p.sum() for p in params]).isfinite().all()


def _where(pl_module: L.LightningModule, epoch: int, batch_idx: int, step: int, what: str) -> str:
    method = getattr(pl_module, "name", type(pl_module).__name__)
    return f"method={method}: {what} at epoch {epoch}, batch {batch_idx} (global step {step})"


def _hint(pl_module: L.LightningModule) -> str:
    lr = getattr(pl_module, "lr", None)
    setting = f" (method.lr={lr:g})" if isinstance(lr, (int, float)) else ""
    return f"lower the learning rate{setting} or check the inputs"


def _non_finite_networks(pl_module: L.LightningModule) -> list[str]:
    """Names of the module's networks (direct children) holding NaN or infinite weights."""
    return [name for name, child in pl_module.named_children()
            if any(not bool(torch.isfinite(p.detach()).all()) for p in child.parameters())]


def _method_frame(exception: BaseException, pl_module: L.LightningModule) -> str | None:
    """`Class.function` of the innermost traceback frame in the method's own file: the update
    that failed (e.g. GPND.update_autoencoder)."""
    import inspect
    import traceback

    try:
        source = inspect.getfile(type(pl_module))
    except TypeError:
        return None
    frames = [f for f in traceback.extract_tb(exception.__traceback__) if f.filename == source]
    return f"{type(pl_module).__name__}.{frames[-1].name}" if frames else None


def _first_line(exception: BaseException) -> str:
    text = str(exception).strip()
    return text.splitlines()[0][:200] if text else "no message"


def _batch_losses(pl_module: L.LightningModule, outputs: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, value) of this batch's loss (automatic optimisation) and its `train/` logs (the
    values themselves, as the module logged them: Lightning's `callback_metrics` would read each
    progress-bar value on the host)."""
    values = []
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if isinstance(loss, torch.Tensor):
        values.append(("loss", loss))
    for name, value in (getattr(pl_module, "logged_train_values", None) or {}).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            values.append((name, value))
    return values


def _describe(value: torch.Tensor) -> str:
    flat = value.detach().float().reshape(-1)
    bad = flat[~torch.isfinite(flat)]
    return str(float(bad[0])) if len(bad) else "?"


class EpochEndCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, written only at the end of an epoch: at most every
    `every_seconds` of training (0: every epoch), and at the end of the training's last epoch
    and of the epoch a stop waits for (`StopAtEpochEnd`, via `save_at_this_epoch_end`).

    A 1,000-epoch schedule of 9-batch epochs would otherwise write its checkpoint 1,000 times
    (ARAE's MLP on COIL-100: 42 MB each). Never mid-epoch or after a mid-epoch validation: a
    resume from an epoch end is exact (batch order and RNG states are functions of the epoch,
    see `ResumableRNG`); one from inside an epoch would not be. The last epoch's checkpoint keeps
    the whole training while validation and test run; the pipeline saves the run's final
    checkpoint itself, after the test."""

    def __init__(self, every_seconds: float = 60.0, **kwargs: Any) -> None:
        if float(every_seconds) < 0:
            raise AnomalyError(f"callbacks.model_checkpoint.every_seconds={every_seconds}: need ≥ 0 (0: every epoch)")
        super().__init__(save_on_train_epoch_end=True, **kwargs)
        self.every_seconds = float(every_seconds)
        self._since = time.monotonic()
        self._save_now = False

    def save_at_this_epoch_end(self) -> None:
        """Write the checkpoint at the end of the epoch in progress, whatever the cadence."""
        self._save_now = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._since = time.monotonic()

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        return  # never mid-epoch (see the class docstring)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return  # validation may run mid-epoch; its epoch's end saves

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = self._save_now or _last_epoch(trainer) or time.monotonic() - self._since >= self.every_seconds
        self._save_now = False
        if not due:
            return
        super().on_train_epoch_end(trainer, pl_module)
        self._since = time.monotonic()


def _last_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch ending now is the training's last (in on_train_epoch_end, where the fit
    loop has counted it as processed; its own `done` would log what it finds)."""
    loop = trainer.fit_loop
    epochs, steps = loop.max_epochs, loop.max_steps
    return (bool(trainer.should_stop) or (epochs is not None and 0 <= epochs <= loop.epoch_progress.current.processed)
            or (steps is not None and 0 <= steps <= trainer.global_step))


# ---- stopping on a signal ---------------------------------------------------------------------------
class StopAtEpochEnd(L.Callback):
    """SIGTERM or SIGINT (Ctrl-C) during training: the epoch in progress finishes, its epoch-end
    checkpoint is written (`EpochEndCheckpoint`, whatever its cadence) and the run ends with a
    `RunInterrupted` (its `where`: "after epoch 3"; anomaly.pipeline adds what the checkpoint
    keeps); a second signal ends the run at once (the last checkpoint written stays).

    Only an epoch end is a point a resume is exact from (see `EpochEndCheckpoint`), and timed
    checkpoints are minutes apart: Lightning's own SIGTERM handler, which stops after the batch
    in progress, lost every epoch since the last one. This callback's handlers replace it from the
    start of training to its end; the previous ones come back after. Under DDP the ranks decide
    together at each epoch end and at the end of training (an all-reduce of a flag: the signal
    may have reached one rank only), so that all stop after the same epoch. The run ends after the
    checkpoint is written, at the next epoch's start or at the end of training (after the last
    epoch)."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}
        self._stopping = False
        self._decided = -1  # the last epoch whose end has decided whether to stop

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # here, not at fit start: Lightning installs its SIGTERM handler after on_fit_start
        self.signum, self._trainer, self._stopping, self._decided = None, trainer, False, -1
        self._previous = handle_stop_signals(self._received)

    def _received(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        if self.signum is None:
            self.signum = signum
            if trainer is not None:  # past this epoch's decision (its end hooks), the next epoch's end stops
                epoch = trainer.current_epoch + 1
                if self._decided == trainer.current_epoch and not _last_epoch(trainer):
                    epoch += 1
                log.warning("%s: stopping at the end of epoch %d, after writing its checkpoint (a second signal "
                            "stops at once)", signal.Signals(signum).name, epoch)
            return
        launcher = trainer.strategy.launcher if trainer is not None else None
        if launcher is not None:  # the other ranks Lightning started stop too, as on Ctrl-C
            launcher.kill(signal.SIGKILL)
        raise RunInterrupted(signum=signum)  # anomaly.pipeline says where it stopped and what is kept

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before the module's epoch-end hook and the checkpoint callbacks (Lightning calls those last)
        self._decided = trainer.current_epoch
        if self._stopping or not trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):
            return
        self._stopping = True
        if self.signum is None:  # a rank the signal did not reach stops for the one it reached
            self.signum = int(signal.SIGTERM)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, EpochEndCheckpoint):
                callback.save_at_this_epoch_end()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stopping:
            self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        # a stop in the last epoch; or a signal after its decision (in the module's epoch-end hook
        # or the checkpoint's writing): the last epoch's checkpoint is written in any case
        if trainer.strategy.reduce_boolean_decision(self._stopping or self.signum is not None, all=False):
            self._stop(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        previous, self._previous, self._trainer = self._previous, {}, None
        restore_handlers(previous)

    def _stop(self, trainer: L.Trainer) -> None:
        self._restore()
        signum, self.signum, self._stopping = int(self.signum or signal.SIGTERM), None, False
        where = f"after epoch {trainer.fit_loop.epoch_progress.current.processed}"
        raise RunInterrupted(f"run stopped by {signal.Signals(signum).name} {where}", signum, where=where)


class ValidationCadence(L.Callback):
    """Validation inside fit (the val/auroc learning curve) at the end of every k-th epoch, k the
    fewest epochs that hold `every_n_batches` training batches (and at least the trainer's
    `check_val_every_n_epoch`). Per-epoch validation of a 1,000-epoch schedule of 9-batch epochs
    cost more than the rest of the bookkeeping together; this keeps it a few percent of training
    on any device (a validation batch costs about what a training batch does, on a GPU as on a
    CPU). 1: every epoch. The threshold is fitted on validation after fit in any case, and
    validation never changes the training's numbers (`AnomalyModule` runs it on a fork of the
    random generators)."""

    def __init__(self, every_n_batches: int = 200) -> None:
        if int(every_n_batches) < 1:
            raise AnomalyError(f"callbacks.validation_cadence.every_n_batches={every_n_batches}: need ≥ 1 "
                               "(1: every epoch)")
        self.every_n_batches = int(every_n_batches)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every = trainer.check_val_every_n_epoch
        batches = trainer.num_training_batches
        if every is None or not isinstance(batches, int) or batches < 1:  # a cadence in batches: as set
            return
        trainer.check_val_every_n_epoch = max(int(every), math.ceil(self.every_n_batches / batches))


def _is_terminal() -> bool:
    """Whether the bars' stream (stderr, as tqdm's) is a terminal."""
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, without a host read per training step: the bar advances every batch
    (tqdm draws it at most every `mininterval`), and its numbers (`show`: values logged in
    training, e.g. train/loss, and what methods log with prog_bar=True, e.g. val/auroc) are read
    at most every `refresh_seconds`. Lightning reads every prog_bar=True value on the host after
    each batch, so training values reach the bar through this class instead."""

    def __init__(self, refresh_seconds: float = 1.0, show: tuple[str, ...] | list[str] = ("train/loss",),
                 line_seconds: float = 60.0) -> None:
        super().__init__(refresh_rate=1)
        self.refresh_seconds = float(refresh_seconds)
        self.show = tuple(show)
        self._read_at = -math.inf
        # where the output is no terminal (a SLURM log, a pipe, CI), a bar's carriage returns make
        # one line of tens of kilobytes: a plain line at an epoch's end instead, at most every
        # line_seconds (and at the last epoch)
        self.line_seconds = float(line_seconds)
        self.lines: bool | None = None  # decided at setup
        self._line_at = -math.inf
        self._fit_start = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.lines is None:
            self.lines = not _is_terminal()
        if self.lines:
            self.disable()

    def _epoch_line(self, trainer: L.Trainer, last: bool = False) -> None:
        now = time.monotonic()
        if not last and now - self._line_at < self.line_seconds:
            return
        self._line_at = now
        logged = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for name in (*self.show, "val/auroc"):
            value = logged.get(f"{name}_epoch", logged.get(f"{name}_step", logged.get(name)))
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                parts.append(f"{name} {float(value):.4g}")
        parts.append(f"{now - self._fit_start:.0f} s")
        log.info(" · ".join(parts))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        for name in self.show:
            value = logged.get(f"{name}_step", logged.get(name))
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                items[name] = f"{float(value):.4g}"
        return items

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._read_at = time.monotonic()  # the first numbers after refresh_seconds, not at batch 0
        self._fit_start = self._line_at = time.monotonic()  # the first line after line_seconds

    def _refresh_numbers(self, trainer: L.Trainer, pl_module: L.LightningModule, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._read_at >= self.refresh_seconds:
            self._read_at = now
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        bar.update(batch_idx + 1 - bar.n)
        self._refresh_numbers(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.lines:
            self._epoch_line(trainer, last=trainer.current_epoch + 1 >= (trainer.max_epochs or 0))
            return
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            self._refresh_numbers(trainer, pl_module)
            bar.refresh()
        if self._leave and bar is not None:
            bar.close()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.lines:
            return
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:  # the bar left on screen shows the last numbers
            self._refresh_numbers(trainer, pl_module, force=True)
            bar.refresh()
        super().on_train_end(trainer, pl_module)

    # ---- within a long scoring batch (AnomalyModule.report_scoring) ----------------------------
    def _show_scoring(self, pl_module: L.LightningModule, bar: Any) -> None:
        """While a batch is scored, the method's progress within it on the bar's right, at most
        every refresh_seconds (a CPU batch of GPND's Jacobians takes a minute)."""
        if bar is None or bar.disable:
            pl_module.scoring_progress = None
            return
        shown = [time.monotonic()]

        def show(done: int, total: int) -> None:
            now = time.monotonic()
            if now - shown[0] >= self.refresh_seconds:
                shown[0] = now
                bar.set_postfix_str(f"{done}/{total} images of this batch", refresh=True)

        pl_module.scoring_progress = show

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._show_scoring(pl_module, self._val_progress_bar)

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._show_scoring(pl_module, self._test_progress_bar)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._val_progress_bar is not None:
            self._val_progress_bar.set_postfix_str("", refresh=False)  # the batch is done
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._test_progress_bar is not None:
            self._test_progress_bar.set_postfix_str("", refresh=False)
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.scoring_progress = None
        super().on_validation_end(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.scoring_progress = None
        super().on_test_end(trainer, pl_module)

"""Epoch ends as the points a run is kept at: the checkpoint written there (`EpochEndCheckpoint`)
and a stop by signal that waits for one (`StopAtEpochEnd`)."""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from anomaly import AnomalyError, RunInterrupted
from anomaly.stop_signals import handle_stop_signals, restore_handlers

log = logging.getLogger("anomaly")


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

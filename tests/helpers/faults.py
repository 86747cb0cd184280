"""Faults on purpose: a run that signals itself mid-epoch or in its test, or waits mid-epoch for a
signal from outside; a method whose scores collapse."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from anomaly.methods.ae import Autoencoder


class SignalAt(L.Callback):
    """Send `signum` to this process at the start of batch `batch` of epoch `epoch` (and of the
    `repeat` - 1 batches after it: a second signal): a kill from outside (SIGKILL: no clean-up
    at all; SIGTERM: what a scheduler sends; SIGINT: Ctrl-C) at a point the test chooses, not one
    a timer happens to hit."""

    def __init__(self, signum: int = signal.SIGKILL, epoch: int = 1, batch: int = 1, repeat: int = 1) -> None:
        self.signum, self.epoch, self.batch, self.repeat = int(signum), int(epoch), int(batch), int(repeat)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and self.batch <= batch_idx < self.batch + self.repeat:
            os.kill(os.getpid(), self.signum)


class SignalInTest(L.Callback):
    """Send `signum` to this process at the start of the first test batch (after training)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = int(signum)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            os.kill(os.getpid(), self.signum)


class WaitForSignal(L.Callback):
    """At the start of batch `batch` of epoch `epoch`, touch `<marker_dir>/<pid>` and wait (at
    most `timeout` seconds) until StopAtEpochEnd has received a signal: a test that sees the
    marker signals from outside while the training is surely in that epoch."""

    def __init__(self, marker_dir: str, epoch: int = 1, batch: int = 0, timeout: float = 120.0) -> None:
        self.marker_dir, self.epoch, self.batch, self.timeout = Path(marker_dir), int(epoch), int(batch), timeout

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        from anomaly.callbacks.epoch_end import StopAtEpochEnd

        if trainer.current_epoch != self.epoch or batch_idx != self.batch:
            return
        (stop,) = [c for c in trainer.callbacks if isinstance(c, StopAtEpochEnd)]
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        (self.marker_dir / str(os.getpid())).touch()
        deadline = time.monotonic() + self.timeout
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.05)


class EpochProbe(L.Callback):
    """Records the epochs this process trains (0-based), in `EpochProbe.trained`."""

    trained: list = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        EpochProbe.trained.append(trainer.current_epoch)


class ConstantScore(Autoencoder):
    """An autoencoder whose scores collapsed to one value (`constant`; NaN: non-finite scores)."""

    # NaN too, so no rule: a parameter typed `float` takes finite numbers only (anomaly.settings)
    def __init__(self, *args, constant: Any = 0.25, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.constant = float(constant)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), self.constant, device=x.device)


class DivergesMidBatch(Autoencoder):
    """An autoencoder whose decoder weights overflow to inf at batch `at`, as a GAN's update can
    within one batch. fail=True: its loss then fails on the NaN it produces (BCE refuses inputs
    outside [0, 1]) before any loss is logged; fail=False: the overflow comes after a finite loss."""

    def __init__(self, *args, at: int = 1, fail: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.fail = int(at), bool(fail)
        self._batch = -1

    def _overflow(self) -> None:
        with torch.no_grad():
            next(self.decoder.parameters()).fill_(float("inf"))

    def training_step(self, batch, batch_idx: int):
        if batch_idx == self.at and self.fail:
            self._overflow()
        x = batch["image"]
        loss = torch.nn.functional.binary_cross_entropy(self(x), x)
        self.log("train/loss", loss)
        self._batch = batch_idx
        return loss

    def on_after_backward(self) -> None:
        if self._batch == self.at and not self.fail:  # after the loss and its gradients
            self._overflow()


class PoisonWeights(L.Callback):
    """Fill every parameter of the module with NaN at the start of training batch `batch`: a
    diverged network, for any method (whatever its losses and optimisers), without waiting for a
    learning rate to overflow it."""

    def __init__(self, batch: int = 1) -> None:
        self.batch = int(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.batch:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))

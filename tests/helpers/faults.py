"""Faults on purpose: a run that signals itself mid-epoch, a method whose scores collapse."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch

from anomaly.methods.ae import Autoencoder


class SignalAt(L.Callback):
    """Send `signum` to this process at the start of batch `batch` of epoch `epoch`: a kill from
    outside (SIGKILL: no clean-up at all; SIGTERM: what a scheduler sends) at a point the test
    chooses, not one a timer happens to hit."""

    def __init__(self, signum: int = signal.SIGKILL, epoch: int = 1, batch: int = 1) -> None:
        self.signum, self.epoch, self.batch = int(signum), int(epoch), int(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class ConstantScore(Autoencoder):
    """An autoencoder whose scores collapsed to one value (`constant`; NaN: non-finite scores)."""

    def __init__(self, *args, constant: float = 0.25, **kwargs) -> None:
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

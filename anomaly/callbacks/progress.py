"""The progress bars (`ProgressBar`), without a host read per training step."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger("anomaly")


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

"""Stop at the first non-finite training loss or weight (`StopOnNonFiniteLoss`), read on the host
only every few batches."""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from anomaly import AnomalyError


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

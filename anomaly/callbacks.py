"""Lightning callbacks for unattended runs (both in `conf/callbacks/default.yaml`).

- `StopOnNonFiniteLoss`: ends training at the first batch whose loss, or any value logged under
  `train/`, or any weight is NaN or infinite, with an `AnomalyError` naming the method, the epoch,
  batch and global step, and the loss terms (or the networks whose weights overflowed). It works
  from what every method already does (return its loss or `self.log("train/…")` its terms), so
  GANs with manual optimisation are covered without code of their own. A diverged network never
  recovers; training on would only waste the job's time and then score with NaN weights.
- `ResumableRNG`: stores the random number generators' states in every checkpoint and puts them
  back when training resumes from one, so that a run resumed from its epoch-end `last.ckpt`
  (`ckpt_path=last`) draws the same noise as the uninterrupted run and ends with the same
  results. (The order of the training batches is a function of seed and epoch, see
  `anomaly.data.datamodule.EpochShuffle`.)
"""

from __future__ import annotations

import logging
import random
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch

from anomaly import AnomalyError

log = logging.getLogger("anomaly")


class StopOnNonFiniteLoss(L.Callback):
    """Raise an AnomalyError at the first non-finite training loss or weight (see the module
    docstring).

    After each batch it checks the batch's losses and (`check_weights`) the parameters: a GAN
    whose update overflowed has NaN weights before any logged loss shows it. When a method's
    own code fails on a diverged network first (BCE refuses NaN inputs, for one), `on_exception`
    leaves a diagnosis on the exception that `anomaly.pipeline` reports instead of the traceback.
    """

    def __init__(self, check_weights: bool = True) -> None:
        self.check_weights = bool(check_weights)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        values = _batch_losses(trainer, outputs)
        flags = [torch.isfinite(v.detach()).all() for _, v in values]
        if self.check_weights:
            flags += [torch.isfinite(p.detach()).all() for p in pl_module.parameters()]
        # one device sync per batch: every value and weight checked together
        if not flags or bool(torch.stack([f.to(flags[0].device) for f in flags]).all()):
            return
        bad = [(name, v) for name, v in values if not bool(torch.isfinite(v.detach()).all())]
        if len(bad) > 1:  # the returned loss is usually logged as train/loss too: name it once
            bad = [(name, v) for name, v in bad if name != "loss"]
        if bad:
            what = "non-finite training loss"
            detail = ", ".join(f"{name}={_describe(v)}" for name, v in bad)
        else:
            what = "non-finite weights"
            losses = ", ".join(f"{name}={float(v.detach().float().reshape(-1)[0]):.4g}" for name, v in values)
            detail = (f"in {', '.join(_non_finite_networks(pl_module))} after this batch's update"
                      + (f" (its losses: {losses})" if losses else ""))
        raise AnomalyError(f"{_where(trainer, pl_module, batch_idx, what)}: {detail}; the training "
                           f"diverged: {_hint(pl_module)}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.training or not isinstance(exception, Exception) or isinstance(exception, AnomalyError):
            return
        networks = _non_finite_networks(pl_module)
        if not networks:  # finite weights: a failure of its own, reported as it is
            return
        step = _method_frame(exception, pl_module)
        batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        exception.anomaly_diagnosis = (
            f"{_where(trainer, pl_module, batch_idx, 'non-finite weights')}: in {', '.join(networks)}; "
            f"{step or 'training'} then failed ({type(exception).__name__}: {_first_line(exception)}); "
            f"the training diverged: {_hint(pl_module)}")


def _where(trainer: L.Trainer, pl_module: L.LightningModule, batch_idx: int, what: str) -> str:
    method = getattr(pl_module, "name", type(pl_module).__name__)
    return (f"method={method}: {what} at epoch {trainer.current_epoch}, batch {batch_idx} "
            f"(global step {trainer.global_step})")


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


def _batch_losses(trainer: L.Trainer, outputs: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, value) of this batch's loss (automatic optimisation) and its `train/` logs."""
    values = []
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if isinstance(loss, torch.Tensor):
        values.append(("loss", loss))
    # During training, callback_metrics holds the values logged in this very batch (logged with
    # on_step=True, the default in training_step); `<name>_step` / `_epoch` are Lightning's copies.
    for name, value in trainer.callback_metrics.items():
        if (name.startswith("train/") and not name.endswith(("_step", "_epoch"))
                and isinstance(value, torch.Tensor) and value.is_floating_point()):
            values.append((name, value))
    return values


def _describe(value: torch.Tensor) -> str:
    flat = value.detach().float().reshape(-1)
    bad = flat[~torch.isfinite(flat)]
    return str(float(bad[0])) if len(bad) else "?"


class ResumableRNG(L.Callback):
    """Save the RNG states with each checkpoint; restore them when training resumes from one."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # plain tensors and lists only: checkpoints are loaded with weights_only=True
        np_state = np.random.get_state()
        py_state = random.getstate()
        state = {"torch": torch.get_rng_state(),
                 "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                           "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                           "cached_gaussian": float(np_state[4])},
                 "python": [py_state[0], list(py_state[1]), py_state[2]]}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # applied in on_train_start: nothing between it and the first resumed batch draws numbers
        # (model building and checkpoint restoring before it may)
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if "numpy" in state:
            n = state["numpy"]
            np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                                 n["has_gauss"], n["cached_gaussian"]))
        if "python" in state:
            version, internal, gauss = state["python"]
            random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        log.info("resumed the random number generators of the checkpoint")

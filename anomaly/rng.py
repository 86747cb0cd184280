"""The random generators, handled in one place: what makes a run's draws a function of its config.

- `ValidationRNG`: validation inside fit draws from a fork of torch's generators (scores that
  sample, the VAE's), so how often it runs (`callbacks.validation_cadence`) never changes the
  training; `AnomalyModule` forks at each validation start and joins at its end.
- `kept_random_state`: every generator (torch CPU and CUDA, NumPy, Python) as it was before a
  block (the cost probe's trial steps, `anomaly.cost`).
- `ResumableRNG` (a callback, `conf/callbacks/default.yaml`): stores the generators' states in
  every checkpoint and puts them back when training resumes from one, so that a run resumed from
  its epoch-end `last.ckpt` (`ckpt_path=last`) draws the same noise as the uninterrupted run and
  ends with the same results. (The order of the training batches is a function of seed and epoch,
  see `anomaly.data.datamodule.EpochShuffle`.) Under DDP each rank draws its own noise
  (`seed_rank_streams`).
"""

from __future__ import annotations

import contextlib
import logging
import random
from contextlib import ExitStack
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("anomaly")


class ValidationRNG:
    """torch's generators forked for a validation inside fit (CPU, and the module's GPU)."""

    def __init__(self) -> None:
        self._fork = ExitStack()

    def start(self, module: L.LightningModule) -> None:
        """At a validation's start: fork where it runs inside fit (a stand-alone validation or
        test draws from the run's own stream, as the run it re-makes did)."""
        self._fork.close()
        if module.trainer.state.fn == TrainerFn.FITTING:
            devices = [module.device.index or 0] if module.device.type == "cuda" else []
            self._fork.enter_context(torch.random.fork_rng(devices=devices))

    def end(self) -> None:
        """At a validation's end: back to the training's own stream."""
        self._fork.close()


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """torch's (CPU, CUDA), NumPy's and Python's generators as they were before the block."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


class ResumableRNG(L.Callback):
    """Save the RNG states with each checkpoint; restore them when training resumes from one.

    Under DDP (world size > 1) every rank would otherwise draw the same noise (GAN latents, PGD
    starts, VAE samples): each rank's generators are seeded at the start of every epoch from
    (seed, epoch, rank), so ranks draw apart, reproducibly, and a resume at an epoch end is exact
    without the other ranks' states. One process keeps one stream, as before."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._pending: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            seed = self.seed if self.seed is not None else (pl_module.run_config or {}).get("seed", 0)
            seed_rank_streams(int(seed), trainer.current_epoch, trainer.global_rank)

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

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a checkpoint of the training's last epoch (a run stopped then) leaves no epoch to train:
        # Lightning skips on_train_start, and validation and test (which may sample: the VAE's
        # scores) draw from the generators as the uninterrupted run left them
        self.on_train_start(trainer, pl_module)


def seed_rank_streams(seed: int, epoch: int, rank: int) -> None:
    """Seed torch (CPU and CUDA), NumPy and Python for one rank's epoch: independent streams per
    (seed, epoch, rank)."""
    words = np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(2, np.uint32)
    torch.manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)
    np.random.seed(int(words[0]))
    random.seed(int(words[1]))

"""Counting what would make a GPU wait for the host, on a CPU.

On a GPU, reading a value on the host (`.item()`, `bool(t)`, `float(t)`, `.tolist()`, `.cpu()`),
an op whose output size depends on the data (`nonzero`, boolean masks, `unique`) or a
comparison returning a Python bool (`torch.equal`) blocks the host until the queue drains: a
*sync*. On a CPU they cost nothing, but they are the same calls: `SyncCounter` counts them
(the ops through a dispatch mode, which sees every aten op, also inside autograd; the
host reads that dispatch no op by patching `Tensor`). On a GPU `torch.cuda.set_sync_debug_mode`
catches what actually syncs (the `gpu` test lane).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that read device memory on the host, or whose output size depends on the data
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim",
            "unique_consecutive", "equal", "is_nonzero", "repeat_interleave", "_assert_async"}
# host reads that dispatch no op on a CPU tensor
HOST_READS = ("tolist", "numpy", "cpu", "__array__")


def _reading_optimizer_step() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "_get_value" and "torch/optim/" in frame.f_code.co_filename.replace("\\", "/"):
            return True
        frame = frame.f_back
    return False


class SyncCounter(TorchDispatchMode):
    """Counts, by name, the syncs (see the module docstring) of the code run while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def add(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" and _reading_optimizer_step():
            pass  # torch.optim keeps (non-capturable) step counts on the host, on every device
        elif name in SYNC_OPS and not (name == "repeat_interleave" and (kwargs or {}).get("output_size")):
            self.add(name)
        elif name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                     for i in (args[1] if len(args) > 1 else []) if i is not None):
            self.add("index[bool mask]")
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextmanager
def host_reads_counted(counter: SyncCounter) -> Iterator[None]:
    """While active, `Tensor.tolist/numpy/cpu/__array__` add to `counter`."""
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name: str, original: Callable) -> Callable:
        def call(self, *args, **kwargs):
            counter.add(name)
            return original(self, *args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def around_each_step(trainer, step_context: Callable[[], Any]) -> list:
    """Run every training batch of `trainer` (from fetching it to the end of its hooks and
    logging: one `advance` of Lightning's epoch loop) inside `step_context()`; returns the list it
    fills, once `trainer.fit` has run, with what each context yielded (one entry per batch)."""
    per_step: list = []
    loop = trainer.fit_loop.epoch_loop
    advance = loop.advance

    def wrapped(*args, **kwargs):
        with step_context() as value:
            out = advance(*args, **kwargs)
        per_step.append(value)
        return out

    loop.advance = wrapped
    return per_step


@contextmanager
def counted_syncs() -> Iterator[dict[str, int]]:
    """Yields the {op: count} dict of the syncs run inside (filled when the block ends)."""
    counter = SyncCounter()
    with counter, host_reads_counted(counter):
        yield counter.counts


def count_step_syncs(trainer) -> list[dict[str, int]]:
    """Make `trainer` count the syncs of each training batch; one {op: count} per batch."""
    return around_each_step(trainer, counted_syncs)

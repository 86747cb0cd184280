"""SIGTERM (a scheduler's pre-emption or time limit) and SIGINT (Ctrl-C): the handlers a run
stops by, without torch or Lightning (the reproduce entry point's fan-out uses them before either
loads).

- During training `anomaly.callbacks.epoch_end.StopAtEpochEnd` handles them: the epoch in progress finishes
  and its checkpoint is written.
- Elsewhere in a run `stop_at_once` does: the run ends at once with `RunInterrupted`.
- `anomaly.reproduce.fanout` passes them on to its jobs.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from anomaly import RunInterrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def handle_stop_signals(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """`handler` for SIGTERM and SIGINT; returns the handlers it replaced ({} outside the main
    thread, where Python sets no handlers: the signals then do what they did)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers `handle_stop_signals` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: not set from Python


@contextmanager
def stop_at_once() -> Iterator[None]:
    """Inside the block, SIGTERM or SIGINT raises `RunInterrupted` (without a message: the caller
    knows what the run has kept) wherever the run is; during training StopAtEpochEnd takes over.
    In validation and test Lightning's SIGTERM handler calls this one after its own."""
    def stop(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum=signum)

    previous = handle_stop_signals(stop)
    try:
        yield
    finally:
        restore_handlers(previous)

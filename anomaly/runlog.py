"""What a run shows on the terminal also goes to its log (`<run dir>/train.log`, Hydra's job log).

Hydra's job logging writes Python logging records to the console and to the job's log file. The
rest of what a run shows does not pass through it: the config tree and the results table (rich),
the `error:` line of a refused or interrupted run (stderr), Lightning's own lines (its logger has
a handler of its own when Lightning is imported before Hydra sets up logging) and Python
warnings. `setup()`, called by the entry points once Hydra has set up logging, hands Lightning's
records and the warnings to the log file too and drops Lightning's advertising tips;
`to_log(text)` writes text the terminal showed to the log file only; `error(message)` prints the
`error:` line and logs it.

"The log file" is every `logging.FileHandler` of the root logger at the time of writing (Hydra's
`hydra.job_logging` puts one there per job, so each job of a multirun writes its own); without
one (tests, notebooks) nothing is written.
"""

from __future__ import annotations

import io
import logging
import sys
import warnings
from typing import Any

# Lightning's loggers that keep their own console handler (propagate=False) when Lightning is
# imported before logging is configured; their records go to the log file as well
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# where Lightning's rank_zero_info records are made (its "💡 Tip: …" lines among them)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "lightning_utilities.core.rank_zero")


def log_files() -> list[logging.FileHandler]:
    """The run's log file handlers (the root logger's FileHandlers: Hydra's job log)."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log(text: str, level: int = logging.INFO, name: str = "anomaly") -> None:
    """Write `text` (what the terminal showed) to the run's log file, not to the console. A block
    of several lines starts on a line of its own (after the record's `[time][name][level] - `)."""
    if "\n" in text:
        text = "\n" + text
    for handler in log_files():
        if level >= handler.level:
            record = logging.LogRecord(name, level, __file__, 0, text, None, None)
            handler.handle(record)


def error(message: str) -> None:
    """The `error: …` line of a run that stops: on stderr, and in the run's log."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    to_log(f"error: {message}", logging.ERROR)


def render(renderable: Any, width: int = 200) -> str:
    """A rich renderable as plain text (no colours, trailing spaces stripped)."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, soft_wrap=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


class DropLightningTips(logging.Filter):
    """Drops Lightning's advertising lines ("💡 Tip: For seamless cloud logging … litlogger …",
    "… litmodels …"), logged by its connectors at every Trainer's start."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not ours to drop
            return True
        return not message.lstrip().startswith("💡 Tip")


class ToLogFile(logging.Handler):
    """Hands a record to the run's log file (whichever the root logger holds at that moment)."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in log_files():
            if record.levelno >= handler.level:
                handler.handle(record)


def setup() -> None:
    """Call from an entry point, after Hydra has configured logging (i.e. inside the
    `@hydra.main` function): no Lightning tips; Lightning's lines and warnings in the log file too.
    Safe to call again (each job of a multirun does)."""
    quiet_lightning_tips()
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.propagate and not any(isinstance(h, ToLogFile) for h in logger.handlers):
            logger.addHandler(ToLogFile())
    _mirror_warnings()


def quiet_lightning_tips() -> None:
    """Drop Lightning's "💡 Tip" lines (a filter on the loggers that make them)."""
    loggers = [logging.getLogger(name) for name in RANK_ZERO_LOGGERS]
    try:
        from lightning_utilities.core import rank_zero

        loggers.append(rank_zero.log)  # the logger rank_zero_info writes to (Lightning re-points it)
    except Exception:  # noqa: BLE001 - another Lightning layout: the names above still apply
        pass
    for logger in loggers:
        if not any(isinstance(f, DropLightningTips) for f in logger.filters):
            logger.addFilter(DropLightningTips())


def _mirror_warnings() -> None:
    shown = warnings.showwarning
    if getattr(shown, "anomaly_mirror", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        shown(message, category, filename, lineno, file, line)
        to_log(warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
               logging.WARNING, "py.warnings")

    showwarning.anomaly_mirror = True
    warnings.showwarning = showwarning

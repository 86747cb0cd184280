"""What a run shows on the terminal also goes to its log (`<run dir>/train.log`, Hydra's job log).

Hydra's job logging writes Python logging records to the console and to the job's log file. The
rest of what a run shows does not pass through it: the config tree and the results table (rich),
the `error:` line of a refused or interrupted run (stderr), Lightning's own lines (its logger has
a handler of its own when Lightning is imported before Hydra sets up logging) and Python
warnings. `setup()`, called by the entry points once Hydra has set up logging, hands Lightning's
records and the warnings to the log file too and drops Lightning's advertising tips;
`to_log(text)` writes text the terminal showed to the log file only; `error(message)` prints the
`error:` line and logs it. `install_warning_filters()` silences the warnings that say nothing
to a user of this package (the entry points call it; importing the package changes no warning
filter).

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

# Warnings about what this package does on purpose (message regexes, for warnings.filterwarnings).
QUIET_WARNINGS = (
    # batches are scaled in the LightningModule's on_after_batch_transfer (the method knows its
    # value range), not in the datamodule
    ".*overridden `on_after_batch_transfer`.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*smaller than the logging interval.*",
    # under DDP, val/test metrics come from scores gathered over all ranks, so every rank logs
    # the same value and syncing them would change nothing
    ".*sync_dist=True.*",
    # DistributedSampler pads validation/test with repeats; the base module drops them by index
    ".*Using `DistributedSampler` with the dataloaders.*",
    # resuming from another run's checkpoint (ckpt_path=last): that run's checkpoint dir is left
    # as it is
    ".*The dirpath has changed from.*",
    # Lightning's all_gather calls a torch function that torch deprecated (nothing to do here)
    ".*all_gather is deprecated.*",
    # method=ocsvm by design: the SVM has no optimiser and nothing to backpropagate
    ".*configure_optimizers` returned `None`.*",
    # conf/hydra/launcher/submitit_local.yaml has the name of the plugin's own config, which it
    # replaces (spelling out every setting); Hydra warns on each composition that it checks it
    # against that schema
    r"(?s).*'hydra/launcher/submitit_local' is validated against ConfigStore",
)


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


def install_warning_filters() -> None:
    """Ignore the QUIET_WARNINGS. For entry points only (the library never changes the warning
    filters): before Hydra composes the config (it warns while composing) and again in every job
    (`setup`: a launcher's job processes do not run the entry module's `__main__`). Safe to call
    again (a filter already installed is moved, not repeated)."""
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def setup() -> None:
    """Call from an entry point, after Hydra has configured logging (i.e. inside the
    `@hydra.main` function): the QUIET_WARNINGS ignored, no Lightning tips; Lightning's lines and
    warnings in the log file too. Safe to call again (each job of a multirun does)."""
    install_warning_filters()
    quiet_lightning_tips()
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if logger.propagate:
            # as Lightning sets them up when it is imported before logging is configured (the entry
            # points import it later, only when a run starts): its lines plain on the console, not
            # also through Hydra's root handler and the `lightning` logger's own
            logger.setLevel(logging.INFO)
            logger.addHandler(logging.StreamHandler())
            logger.propagate = False
        if not any(isinstance(h, ToLogFile) for h in logger.handlers):
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

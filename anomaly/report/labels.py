"""The text of settings, rows and groups (`gpnd · trainer.max_epochs=10`), shared by the
grouping and the layout."""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from anomaly.report.load import Run


def setting_text(key: str, value: Any) -> str:
    """`outlier_ratio=0.5`, `lr=0.001` (protocol / method settings), `trainer.max_epochs=10`."""
    name = key.split(".", 1)[1] if key.startswith(("protocol.", "method.")) else key
    if value is None:  # unset: a count (n_train) then takes all there are
        value = "all" if name.rsplit(".", 1)[-1].startswith("n_") else "none"
    if isinstance(value, tuple):
        value = "[" + ",".join(map(str, value)) + "]"
    return f"{name}={value}"


def settings_text(settings: Iterable[tuple[str, Any]], sep: str = " · ") -> str:
    return sep.join(setting_text(k, v) for k, v in settings)


def row_label(row: tuple) -> str:
    method, dataset, protocol, flags, settings = row
    return " · ".join([method, dataset, protocol, *flags] + ([settings_text(settings)] if settings else []))


def natural(text: Any) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(text)) if t]


def group_title(group: tuple) -> str:
    dataset, protocol, settings = group
    return " · ".join([dataset, protocol] + ([settings_text(settings)] if settings else []))


# protocol settings that cut the data below the dataset's (a benchmark's reduced budget)
DATA_LIMITS = (("protocol.n_train", "training images"), ("protocol.n_test", "test images"))


def data_limits(runs: Iterable[Run]) -> str | None:
    """'1,000 training images · 1,000 test images' where every run shares such a cut; None else."""
    runs = list(runs)
    parts = []
    for key, words in DATA_LIMITS:
        values = {r.settings.get(key) for r in runs}
        value = values.pop() if len(values) == 1 else None
        if isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{value:,} {words}")
    return " · ".join(parts) or None


def shared_schedule(runs: Iterable[Run]) -> str | None:
    """The schedule every run shares (None: they differ, or none is known)."""
    found = {r.schedule for r in runs}
    return found.pop() if len(found) == 1 else None


def schedule_span(runs: Sequence[Run]) -> str:
    """The epochs a method's runs trained: the one they share ('3/80 ep'), the span where they
    differ against one schedule ('47–61/1600 ep': a compute budget stops each class's run at its
    own epoch), else 'mixed' ('?': none recorded)."""
    shared = shared_schedule(runs)
    if shared is not None:
        return shared
    found = [re.fullmatch(r"(\d+)(/\d+)? ep", str(r.schedule)) for r in runs]
    if not all(found):
        return "mixed" if any(r.schedule for r in runs) else "?"
    epochs = sorted(int(m.group(1)) for m in found)
    of = {m.group(2) or "" for m in found}
    return f"{epochs[0]}–{epochs[-1]}{of.pop()} ep" if len(of) == 1 else "mixed"


def schedule_group(run: Run) -> str | None:
    """What a run's epochs follow from: its schedule, or the compute budget that stopped it (runs
    of one config under one budget stop at their own epochs and still share a row)."""
    flops = (run.cost or {}).get("budget_flops")
    return f"compute budget {float(flops):g}" if flops else run.schedule

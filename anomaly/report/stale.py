"""Stale kept results in the report: a kept cell (`<results dir>/<table>/<budget>/<cell>/
results.json`) whose command now composes another run config (`reproduce --status`) keeps its
number and gets the suspect mark, with "stale" and what changed in the legend."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from anomaly.report.load import Run


def kept_root(run: Run) -> tuple[Path, str, str] | None:
    """(results dir, table, budget) of a run read from a kept cell's folder, else None."""
    table = (run.reproduce or {}).get("table") if isinstance(run.reproduce, dict) else None
    path = Path(run.path)
    folder = path.parent if path.name == "results.json" else path
    if not table or folder.parent.parent.name != table:
        return None
    return folder.parent.parent.parent, table, folder.parent.name


def mark_stale(runs: Iterable[Run]) -> int:
    """Flag the kept runs whose command composes another config today (no data check: the report
    runs where the data may not be); returns how many were flagged."""
    runs = list(runs)
    kept = {id(run): kept_root(run) for run in runs}
    pairs = sorted({(root, table) for root, table, _ in filter(None, kept.values())})
    if not pairs:
        return 0
    from anomaly.reproduce.status import check

    stale = {}
    for root, table in pairs:
        for found in check(root, table, data=False, code=False):
            if found.state == "stale":
                stale[(root, table, found.budget, found.cell)] = "; ".join(found.why)
    flagged = 0
    for run in runs:
        where = kept[id(run)]
        if where is None:
            continue
        why = stale.get((*where, Path(run.path).parent.name if Path(run.path).name == "results.json"
                         else Path(run.path).name))
        if why is not None:
            run.suspect = (*run.suspect, {"id": "stale", "reason": f"stale: its command now makes another run "
                                                                   f"config ({why}); rerun=true re-makes it"})
            flagged += 1
    return flagged

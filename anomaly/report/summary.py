"""The terminal's short report of reproduced tables: one line per table and budget (its cells,
schedule, the mean Δ against the paper over the lines that are the paper's own, the flagged
and stale cells); the full tables go to the report's files (`--full`: on the terminal too)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from anomaly.report.labels import shared_schedule
from anomaly.report.layout import PaperTable
from anomaly.report.render import SHORT_NAMES, Table


def mean_delta(table: PaperTable, metric: str) -> float | None:
    """The mean of the table's Δ against the paper: its 'all cells' line where it has one, else
    its rows' means (lines over fewer classes than the paper's, which have no Δ, left out)."""
    lines = table.lines(metric)
    every = [c.delta for _, col, c in lines if col == "all" and c.delta is not None]
    if every:
        return every[0]
    rows = [c.delta for _, col, c in lines if col == "mean" and c.delta is not None]
    return float(np.mean(rows)) if rows else None


def summary_table(tables: Sequence[PaperTable], metrics_of) -> Table:
    """A line per reproduced table × budget."""
    rows, numbers, why = [], [], []
    for table in tables:
        metrics = metrics_of(table) or table.metrics()
        metric = metrics[0] if metrics else "auroc"
        delta = mean_delta(table, metric) if metrics_of(table) else None
        runs = table.runs
        flagged = sum(bool(r.suspect) for r in runs)
        stale = sum(any(f.get("id") == "stale" for f in r.suspect) for r in runs)
        if delta is None:
            why.append(f"{table.table}: {table.why_no_delta(metric) or 'no line set against the paper'}")
        rows.append([table.table, str(table.budget), shared_schedule(runs) or "mixed", str(table.n_cells()),
                     METRIC_WORDS.get(metric, SHORT_NAMES.get(metric, metric)),
                     "—" if delta is None else f"{delta:+.3f}", str(flagged) if flagged else "—",
                     str(stale) if stale else "—"])
        numbers.append([None, None, None, float(table.n_cells()), None, delta, float(flagged), float(stale)])
    return Table("Reproduced tables (every table: report.md, or --full)",
                 ["table", "budget", "epochs", "cells", "metric", "Δ", "flag", "stale"], rows, numbers,
                 ["Δ: the mean of ours − paper over the lines that are the paper's own cells; flag: cells "
                  "with a suspect or stale number (! in the full tables); stale: the cell's command now makes "
                  "another config (reproduce --status).", *(f"no Δ, {line}" for line in dict.fromkeys(why))])


METRIC_WORDS = {"f1_paper": "F1", "f1_inlier": "F1-in", "auroc": "AUROC"}

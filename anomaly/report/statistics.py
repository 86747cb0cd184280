"""Statistics: a cell's mean and spread over its repetitions (seeds / folds / draws), a row's
summary, and ours set against a published number (`Comparison`: Δ and whether ours is "below")."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from anomaly.report.load import Run


@dataclass
class Cell:
    values: list[float]
    failed: int = 0
    suspect: list[Run] = field(default_factory=list)  # the flagged runs among those averaged

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        """The spread over seeds / folds / draws (population std; None for fewer than 2 runs)."""
        return float(np.std(self.values)) if len(self.values) > 1 else None

    def add(self, run: Run, metric: str) -> None:
        """A run's value, or a failure when the run failed or has no finite value."""
        value = run.value(metric) if run.ok else None
        if value is None:
            self.failed += 1
        else:
            self.values.append(value)
            if run.suspect:
                self.suspect.append(run)


def cells(runs: Iterable[Run], metric: str, key=lambda r: r.row) -> dict[Any, dict[str, Cell]]:
    """row → column → Cell."""
    out: dict[Any, dict[str, Cell]] = defaultdict(dict)
    for run in runs:
        out[key(run)].setdefault(run.column, Cell([])).add(run, metric)
    return out


def summary(row_cells: dict[str, Cell]) -> tuple[float | None, float | None, int, int]:
    """(mean of the class means, std over all runs, runs averaged, runs failed)."""
    means = [c.mean for c in row_cells.values() if c.mean is not None]
    every = [v for c in row_cells.values() for v in c.values]
    failed = sum(c.failed for c in row_cells.values())
    return (float(np.mean(means)) if means else None,
            float(np.std(every)) if len(every) > 1 else None, len(every), failed)


@dataclass
class Comparison:
    """Ours (mean, spread over seeds / folds / draws, runs), the paper's number and Δ."""
    ours: float | None
    spread: float | None
    n: int
    paper: float | None
    failed: int = 0
    suspect: list[Run] = field(default_factory=list)  # a class cell's flagged runs (a mean's: none)
    # a mean of ours over fewer classes than the paper's mean covers ("1 of 10 classes"): shown
    # beside the paper's number, never set against it (no Δ)
    partial: str | None = None

    @property
    def delta(self) -> float | None:
        if self.partial or self.ours is None or self.paper is None:
            return None
        return self.ours - self.paper

    @property
    def mark(self) -> str:
        """"below": ours below the paper by more than our spread; "no spread": ours below the
        paper but from one run per cell (one fold / seed / draw: nothing to judge the shortfall
        by); else ""."""
        if self.delta is None or self.delta >= 0:
            return ""
        if self.spread is None:
            return "no spread"
        return "below" if -self.delta > self.spread else ""


def compare_cell(runs: Sequence[Run], metric: str, paper: float | None) -> Comparison:
    cell = Cell([])
    for run in runs:
        cell.add(run, metric)
    return Comparison(cell.mean, cell.std, cell.n, paper, cell.failed, cell.suspect)


def compare_mean(cell_runs: Sequence[Sequence[Run]], metric: str, paper: float | None) -> Comparison:
    """The mean over cells (each cell's mean first). Spread: the std over repetitions (seed /
    fold / draw) of the mean over the cells, from the repetitions that ran every cell; else the
    pooled std within cells; none ("no spread") when every cell has one run."""
    cells_ = []
    for runs in cell_runs:
        cell = Cell([])
        for run in runs:
            cell.add(run, metric)
        cells_.append((cell, runs))
    used = [(c, runs) for c, runs in cells_ if c.mean is not None]
    failed = sum(c.failed for c, _ in cells_)
    if not used:
        return Comparison(None, None, 0, paper, failed)
    per_rep: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, (_, runs) in enumerate(used):
        for run in runs:
            value = run.value(metric) if run.ok else None
            if value is not None:
                per_rep[tuple(sorted(run.repetition.items(), key=str))][i].append(value)
    complete = [np.mean([np.mean(v) for v in by_cell.values()]) for by_cell in per_rep.values()
                if len(by_cell) == len(used)]
    variances = [float(np.var(c.values)) for c, _ in used if c.n > 1]
    spread = (float(np.std(complete)) if len(complete) > 1
              else float(np.sqrt(np.mean(variances))) if variances else None)
    # a mean over a flagged (suspect or stale) cell is marked too: a compact table may show it alone
    flagged = [r for c, _ in used for r in c.suspect]
    return Comparison(float(np.mean([c.mean for c, _ in used])), spread, sum(c.n for c, _ in used), paper, failed,
                      flagged)

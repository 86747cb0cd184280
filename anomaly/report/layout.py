"""Layout: a reproduced table as rows × class columns (`PaperTable`, `PaperRow`), ours set against
the paper per cell, per row's mean and over the table; `render` writes them out.

The paper's side of a mean: its number for the row where it gives one number for all of the
row's classes, else its published `paper_mean` (a table of one row; several rows: a line over
all cells), else the mean of its numbers over the cells that have one (ours then over the same
cells). The metrics are the table config's (its `metric`, then those its paper entries give).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from anomaly.report import table_conf
from anomaly.report.group import CELL_CLASS, cell_of, paper_rows
from anomaly.report.labels import data_limits, natural, settings_text, shared_schedule
from anomaly.report.load import Run
from anomaly.report.statistics import Comparison, compare_cell, compare_mean


@dataclass
class PaperRow:
    """A row of a reproduced table: the cells that share the values of the cell keys other than
    the classes and the repetitions (e.g. one outlier ratio); `cells`: class column → runs."""
    label: str
    cells: dict[str, list[Run]]
    settings: tuple = ()  # the cell keys' (key, value) pairs the label names

    def per_class(self, metric: str) -> dict[str, float | None]:
        """The paper's number for each class cell of the row (None: it has none)."""
        return {c: next((v for r in runs if (v := r.paper_value(metric)) is not None), None)
                for c, runs in self.cells.items()}


@dataclass
class PaperTable:
    """A reproduced table (`reproduce.table`) at one budget (and flags), split further by any
    setting that differs among the runs of one cell; rows × class columns, as `PaperRow`s."""
    table: str
    budget: str | None
    flags: tuple[str, ...]
    split: tuple
    rows: list[PaperRow]

    @property
    def runs(self) -> list[Run]:
        return [r for row in self.rows for runs in row.cells.values() for r in runs]

    @property
    def title(self) -> str:
        parts = [self.table, f"budget {self.budget}" if self.budget else "no budget", *self.flags]
        schedule, limits = shared_schedule(self.runs), data_limits(self.runs)
        return " · ".join(parts + ([settings_text(self.split)] if self.split else [])
                          + [x for x in (schedule, limits) if x])

    @property
    def columns(self) -> list[str]:
        return sorted({c for row in self.rows for c in row.cells}, key=natural)

    def metrics(self) -> list[str]:
        """The metrics the paper gives numbers for (the table's own metric first): the table
        config's `metric`, `paper` and `paper_mean`; a table this checkout lacks: those its runs
        recorded with `reproduce`."""
        config = table_conf.table_config(self.table)
        if config is not None:
            sources = [(config.metric, [*config.paper, config.paper_mean])]
        else:
            sources = [(info.get("metric"), [info.get("paper"), info.get("paper_mean")])
                       for info in (r.reproduce or {} for r in self.runs)]
        names: list[str] = []
        for metric, entries in sources:
            names += [str(metric)] if metric else []
            for entry in entries:
                names += [k for k, v in (entry or {}).items() if k != "where" and isinstance(v, (int, float))]
        with_paper = [m for m in dict.fromkeys(names) if self.has_paper(m)]
        # a table without published numbers still shows ours in its own metric (paper: —)
        return with_paper or list(dict.fromkeys(names))[:1]

    def has_paper(self, metric: str) -> bool:
        return self.published_mean(metric) is not None or any(r.paper_value(metric) is not None for r in self.runs)

    def published_mean(self, metric: str) -> float | None:
        """The paper's own mean over the table (`reproduce.paper_mean`)."""
        return next((v for r in self.runs if (v := r.paper_mean(metric)) is not None), None)

    def n_cells(self) -> int:
        return len({cell_of(r) for r in self.runs})

    def rows_only(self, metric: str) -> bool:
        """Whether the paper's numbers are for whole rows: every row's classes share one number
        (a `where` that names no class: the paper's mean over them), in a table with a row of
        several classes. Its class cells are then left without a paper number (the number is not
        theirs) and each row's mean is set against it."""
        config = table_conf.table_config(self.table)
        keys = {metric, *(r.metric_key(metric) for r in self.runs)}  # f1_paper: the F1 the paper reports
        entries = [e for e in (config.paper if config is not None else []) if keys & set(e)]
        if entries:  # the table says it: no published number of this metric names a class
            return not any(k in CELL_CLASS for e in entries for k in (e.get("where") or {}))
        numbered = [list(row.per_class(metric).values()) for row in self.rows]
        numbered = [values for values in numbered if any(v is not None for v in values)]
        return (bool(numbered) and any(len(row.cells) > 1 for row in self.rows)
                and all(None not in values and len(set(values)) == 1 for values in numbered))

    def row_paper(self, row: PaperRow, metric: str) -> tuple[dict[str, float | None], float | None]:
        """(the paper's number per class, its number for the row as a whole)."""
        per_class = row.per_class(metric)
        if self.rows_only(metric):
            values = [v for v in per_class.values() if v is not None]
            return dict.fromkeys(per_class), (values[0] if values else None)
        return per_class, None

    def lines(self, metric: str) -> list[tuple[str, str, Comparison]]:
        """(row label, column or "mean" / "all", comparison) for every class cell, each row's
        mean and, for a table of several rows with a published mean, the mean over all cells.
        A row's mean is set against the paper's number for the row, or its published mean (a
        table of one row), or else the mean of the paper's numbers over the cells that have one
        (ours then over the same cells)."""
        out = []
        published = self.published_mean(metric)
        for row in self.rows:
            per_class, row_number = self.row_paper(row, metric)
            columns = sorted(row.cells, key=natural)
            for column in columns:
                out.append((row.label, column, compare_cell(row.cells[column], metric, per_class[column])))
            if row_number is not None or (published is not None and len(self.rows) == 1):
                # the paper's mean over the grid's classes: ours only where it covers them all
                mean = compare_mean([row.cells[c] for c in columns], metric,
                                    row_number if row_number is not None else published)
                mean.partial = self.partial(row, metric)
            else:
                both = [c for c in columns if per_class[c] is not None
                        and compare_cell(row.cells[c], metric, None).ours is not None]
                paper = float(np.mean([per_class[c] for c in both])) if both else None
                mean = compare_mean([row.cells[c] for c in (both or columns)], metric, paper)
            out.append((row.label, "mean", mean))
        if published is not None and len(self.rows) > 1:
            every = compare_mean([runs for row in self.rows for runs in row.cells.values()], metric, published)
            every.partial = next(filter(None, (self.partial(row, metric) for row in self.rows)), None)
            out.append(("", "all", every))
        return out

    def why_no_delta(self, metric: str) -> str | None:
        """Why no line of the table is set against the paper (None where one is): the table has
        no published numbers (its config says why), they are for cells not run here (another
        variant), or ours covers fewer classes than the paper's means."""
        lines = self.lines(metric)
        if any(c.delta is not None for _, _, c in lines):
            return None
        config = table_conf.table_config(self.table)
        if config is not None and config.variants_from is not None:
            return "a benchmark of every method: its leaderboard ranks them (the field's means beside it)"
        if config is not None and not config.paper and not config.paper_mean:
            return config.no_paper or "no published numbers for this table"
        partial = next((c.partial for _, _, c in lines if c.partial), None)
        if partial:
            return f"ours covers {partial} of the paper's means"
        if config is not None:
            variants = sorted({str(e["where"]["variant"]) for e in config.paper if "variant" in (e.get("where") or {})})
            if variants:
                return f"the paper's numbers are for {', '.join(variants)}, not run here"
        return "no published number for the cells run here"

    def grid_classes(self) -> int | None:
        """How many classes the table's grid holds (what the paper's means are over); None where
        its classes are drawn, not listed (COIL-100), or the table is unknown."""
        config = table_conf.table_config(self.table)
        counts = [len(v) for k, v in (config.grid.items() if config is not None else ()) if k in CELL_CLASS]
        return int(np.prod(counts)) if counts else None

    def partial(self, row: PaperRow, metric: str) -> str | None:
        """'k of n classes' where ours covers fewer of the grid's classes than the paper's mean."""
        expected = self.grid_classes()
        covered = sum(compare_cell(runs, metric, None).ours is not None for runs in row.cells.values())
        return f"{covered} of {expected} classes" if expected and covered < expected else None

    def row_level(self, row: PaperRow) -> bool:
        """Whether the paper has numbers for this row only as a whole (or none): its class lines
        then add nothing to a compact table."""
        return len(row.cells) == 1 or all(
            self.rows_only(m) or not any(v is not None for v in row.per_class(m).values()) for m in self.metrics())

    def commands(self) -> list[str]:
        return list(dict.fromkeys(r.command for r in self.runs if r.command))

    def sources(self) -> list[str]:
        return list(dict.fromkeys(str(r.reproduce.get("paper_source")) for r in self.runs
                                  if r.reproduce and r.reproduce.get("paper_source")))

    def references(self) -> list[dict]:
        """Other published numbers for this table (`references` in conf/table/<table>.yaml, read
        at report time, so results written before an entry was added show it too)."""
        return table_conf.table_references(self.table)

    def trained_in(self) -> list[str]:
        return list(dict.fromkeys(str(r.reproduce.get("trained_in")) for r in self.runs
                                  if r.reproduce and r.reproduce.get("trained_in")))


def _with_schedule(label: str, cells_: dict[str, list[Run]], uniform: str | None) -> str:
    """A row's label with its schedule where the table's rows do not share one (a table that
    does says it once, in its title)."""
    if uniform is not None or not any(r.schedule for runs in cells_.values() for r in runs):
        return label
    own = shared_schedule(r for runs in cells_.values() for r in runs) or "mixed schedules"
    return " · ".join(filter(None, [label, own]))


def paper_tables(runs: Sequence[Run]) -> list[PaperTable]:
    """The runs that carry `reproduce`, by table × budget × flags (× any setting that differs
    among the runs of one cell), rows and columns as `group.paper_rows` makes them."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.reproduce and run.reproduce.get("table"):
            groups[(str(run.reproduce["table"]), run.budget, run.flags)].append(run)
    tables = []
    for (table, budget, flags), members in groups.items():
        for split, rows in paper_rows(members).items():
            uniform = shared_schedule(r for cells_ in rows.values() for runs in cells_.values() for r in runs)
            lines = [PaperRow(_with_schedule(settings_text(row), cells_, uniform), cells_, row)
                     for row, cells_ in rows.items()]
            lines.sort(key=lambda r: natural(r.label))
            tables.append(PaperTable(table, budget, flags, split, lines))
    return sorted(tables, key=lambda t: (t.table, str(t.budget), t.flags, str(t.split)))

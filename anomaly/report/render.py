"""Rows and cells → tables (`Table`: header, text rows, the numbers behind them) → Markdown, CSV,
rich on the terminal, and the README's reproduction section."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from anomaly.report.group import method_label, ordered_columns, protocol_groups, row_name
from anomaly.report.labels import (data_limits, group_title, natural, row_label, schedule_group, schedule_span,
                                   settings_text, shared_schedule)
from anomaly.report.layout import PaperTable
from anomaly.report.load import LeftOut, ReportError, Run
from anomaly.report.metrics import METRIC_NAMES, SHORT_NAMES
from anomaly.report.statistics import Cell, Comparison, cells, summary
from anomaly.report.suspect import MARK, flag_ids, legend, marked

README_START = "<!-- reproduction:start -->"
README_END = "<!-- reproduction:end -->"
MARKS = ("Ours: mean ± std over seeds / folds / draws; Δ = ours − paper; `below`: ours lower than the "
         "paper by more than that std; `no spread`: lower, but each cell ran once (one fold / seed / draw), so there is no spread to judge the gap by. A row's mean "
         "is set against the paper's number for the row, or its published mean, or else the mean of "
         "its numbers over the same cells.")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    numbers: list[list[float | None]]  # the same cells as numbers (None: missing / failed)
    notes: list[str] = field(default_factory=list)  # printed under the table
    # (row, column) → the ids of the flags of the cell's runs (the CSVs' `suspect`)
    flags: dict[tuple[int, int], str] = field(default_factory=dict)


def number(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def cell_text(cell: Cell, with_std: bool = False) -> str:
    if not cell.values:
        return "failed" if cell.failed else "—"
    out = marked(number(cell.mean, cell.std if with_std else None), cell.suspect)
    if cell.failed:
        out += f" ({cell.failed} failed)"
    return out


def flag_cells(table: Table, flagged: list[tuple[int, int, str, str, list[Run]]]) -> Table:
    """The table with its flagged cells ((row, column) index, row and column name, flagged
    runs) recorded for the CSV and named in its legend."""
    table.flags = {(r, c): flag_ids(runs) for r, c, _, _, runs in flagged}
    table.notes += legend((row, column, runs) for _, _, row, column, runs in flagged)
    return table


def _incomplete(row_cells: dict[str, Cell], columns: Sequence[str]) -> bool:
    return any(c not in row_cells or not row_cells[c].values for c in columns)


def class_tables(runs: list[Run], metric: str) -> list[Table]:
    """One table per dataset × protocol (× its differing protocol settings): rows the methods
    (with whatever else sets a row apart), columns that dataset's classes as it names them; cells
    the mean over seeds / folds / draws; `mean ± std`: the mean of the class cells ± the std over
    the row's runs (`*`: a class of the table that this row lacks or failed, not averaged in)."""
    tables = []
    for group, members in protocol_groups(runs):
        uniform = shared_schedule(members)  # said once in the title, else per row
        per_row = uniform is None and any(r.schedule for r in members)
        # runs of one config share a row: the same schedule, or the same compute budget (which
        # stops each class's run at its own epoch: the row gives their span)
        alike: dict[tuple, list[Run]] = {}
        for run in members:
            alike.setdefault((row_name(run), schedule_group(run)), []).append(run)

        def label_of(run: Run) -> str:
            if not per_row:
                return row_name(run)
            span = schedule_span(alike[(row_name(run), schedule_group(run))])
            return " · ".join([row_name(run), "epochs unknown" if span == "?" else span])

        by_row = cells(members, metric, key=label_of)
        columns = ordered_columns(members)
        rows, numbers, flagged = [], [], []
        for r, label in enumerate(sorted(by_row, key=natural)):
            row_cells = by_row[label]
            mean, std, n, failed = summary(row_cells)
            mean_text = number(mean, std) + (" *" if mean is not None and _incomplete(row_cells, columns) else "")
            rows.append([label] + [cell_text(row_cells[c]) if c in row_cells else "—" for c in columns]
                        + [mean_text, str(n), str(failed)])
            numbers.append([row_cells[c].mean if c in row_cells else None for c in columns] + [mean, std])
            flagged += [(r, i, label, c, row_cells[c].suspect) for i, c in enumerate(columns, 1)
                        if c in row_cells and row_cells[c].suspect]
        title = " · ".join(filter(None, [group_metric_title(metric, members), group_title(group), uniform,
                                         data_limits(members)]))
        tables.append(flag_cells(Table(title, ["method"] + columns + ["mean ± std", "runs", "failed"], rows, numbers),
                                 flagged))
    return tables


def group_metric_title(metric: str, members: Sequence[Run]) -> str:
    """The metric's name, saying which F1 the protocol's paper reported where `f1_paper` resolves
    to one for every run (anomalies or inliers positive)."""
    if metric == "f1_paper":
        resolved = {r.metric_key(metric) for r in members}
        if len(resolved) == 1:
            return metric_title(resolved.pop())
    return metric_title(metric)


def compare_tables(runs: list[Run], metric: str) -> list[Table]:
    """Per dataset × protocol (× differing protocol settings): rows the classes, one column per
    method (a method with another setting, budget or flag is a column of its own)."""
    tables = []
    for group, members in protocol_groups(runs):
        by_method = cells(members, metric, key=method_label)
        methods = sorted(by_method, key=natural)
        columns = ordered_columns(members)
        rows, numbers, flagged = [], [], []
        for r, column in enumerate(columns):
            row_cells = [by_method[m].get(column) for m in methods]
            rows.append([column] + [cell_text(c, with_std=True) if c else "—" for c in row_cells])
            numbers.append([c.mean if c else None for c in row_cells])
            flagged += [(r, i, m, column, c.suspect) for i, (m, c) in enumerate(zip(methods, row_cells), 1)
                        if c and c.suspect]
        mean_row = ["mean"]
        for m in methods:
            mean, std, _, _ = summary(by_method[m])
            mean_row.append(number(mean, std or None) + (" *" if mean is not None and _incomplete(by_method[m], columns)
                                                         else ""))
        rows.append(mean_row)
        numbers.append([summary(by_method[m])[0] for m in methods])
        tables.append(flag_cells(Table(f"{group_metric_title(metric, members)} · {group_title(group)}",
                                       ["class"] + methods, rows, numbers), flagged))
    return tables


# ---- ours against the paper ----------------------------------------------------------------------
def delta_text(comparison: Comparison) -> str:
    if comparison.partial:
        return "n/a"  # not the paper's cells
    if comparison.delta is None:
        return "—"
    return f"{comparison.delta:+.3f}" + (f" {comparison.mark}" if comparison.mark else "")


def ours_text(comparison: Comparison) -> str:
    if comparison.ours is None:
        return "failed" if comparison.failed else "—"
    out = marked(number(comparison.ours, comparison.spread if comparison.n > 1 else None), comparison.suspect)
    return out + (f" ({comparison.failed} failed)" if comparison.failed else "")


def paper_table(table: PaperTable, metrics: Sequence[str], compact: bool = False) -> Table:
    """Lines: every class cell of every row, then the row's mean (compact: a row the paper gives
    one number for, or of one class, is its mean line alone); per metric ours (mean ± std over
    seeds / folds / draws), paper, Δ (with its mark)."""
    by_metric = {m: {(row, col): c for row, col, c in table.lines(m)} for m in metrics}
    order = list(dict.fromkeys(key for m in metrics for key in by_metric[m]))
    collapsed = {row.label for row in table.rows if table.row_level(row)} if compact else set()
    single = {row.label for row in table.rows if len(row.cells) == 1}  # its mean line repeats its class line
    header = ["cell", "n"]
    for metric in metrics:
        header += [f"{SHORT_NAMES.get(metric, metric)} ours", "paper", "Δ"]
    rows, numbers, flagged = [], [], []
    for row, col in order:
        if row in collapsed and col not in ("mean", "all"):
            continue
        if col == "mean" and row in single and row not in collapsed and not any(
                (c := by_metric[m].get((row, col))) is not None and c.partial for m in metrics):
            continue
        if col == "all":
            label = "all cells"
        elif col == "mean":
            label = (row or "mean") if row in collapsed else " · ".join(filter(None, [row, "mean"]))
        else:
            label = " · ".join(filter(None, [row, col]))
        comparisons = [by_metric[m].get((row, col)) for m in metrics]
        partial = next((c.partial for c in comparisons if c and c.partial), None)
        if partial:  # a mean over a subset of the classes the paper's mean covers: said, and no Δ
            label += f" ({partial})"
        line = [label, str(max((c.n for c in comparisons if c), default=0))]
        for c in comparisons:
            line += [ours_text(c), number(c.paper), delta_text(c)] if c else ["—", "—", "—"]
        flagged += [(len(rows), 2 + 3 * i, row, col, c.suspect) for i, c in enumerate(comparisons) if c and c.suspect]
        rows.append(line)
        numbers.append([v for c in comparisons for v in ((c.ours, c.paper, c.delta) if c else (None,) * 3)])
    return flag_cells(Table(table.title, header, rows, numbers), flagged)


def paper_caption(table: PaperTable) -> str:
    parts = table.sources() + [f"{table.n_cells()} cell{'s' if table.n_cells() != 1 else ''} run"]
    trainings = len(table.trained_in())
    if trainings:
        parts.append(f"{trainings} training{'s' if trainings != 1 else ''}")
    failed = sum(not r.ok for r in table.runs)
    if failed:
        parts.append(f"{failed} failed")
    subset = data_line(table.runs)
    if subset:
        parts.append(subset)
    why = next(filter(None, (table.why_no_delta(m) for m in table.metrics()[:1])), None)
    if why:
        parts.append(f"no Δ: {why}")
    return " · ".join(parts)


def data_line(runs: Sequence[Run]) -> str | None:
    """'data: 10,000 of the official 60,000 training images (the paper: all of them)' where the
    runs' copy of the dataset is smaller than the release the paper used."""
    from anomaly.provenance import subset_line

    lines = sorted({line for line in (subset_line(r.dataset_size) for r in runs) if line})
    if not lines:
        return None
    return f"data: {'; '.join(lines)} here; the paper: all"


def references_line(table: PaperTable) -> str | None:
    """Other published numbers for the table, each with its source and the cells it is for."""
    parts = []
    for ref in table.references():
        where = ", ".join(f"{k}={v}" for k, v in (ref.get("where") or {}).items())
        numbers = ", ".join(f"{metric_title(k)} {v:.3f}" for k, v in ref.items()
                            if k not in ("source", "where") and isinstance(v, (int, float)))
        parts.append(f"{numbers}{f' at {where}' if where else ''} ({ref['source']})")
    return ("Also published, not compared with: " + "; ".join(parts) + ".") if parts else None


def rerun_line(table: PaperTable) -> str:
    commands = table.commands()
    if not commands:
        return "Re-run: the results files record no command."
    if len(commands) == 1:
        return f"Re-run: `{commands[0]}`"
    return f"Re-run: {len(commands)} commands (one per results file), e.g. `{commands[0]}`"


# ---- output --------------------------------------------------------------------------------------
def markdown(table: Table, level: str = "###") -> str:
    lines = [f"{level} {table.title}", "", "| " + " | ".join(_escape(h) for h in table.header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines += [""] + table.notes
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def write_csv(tables: Sequence[Table], path: Path) -> Path:
    """Tables of one metric in long format (one line per row × class, and the row's mean), for
    pandas: table (its title), row, column, value (the mean), text (as the table shows it)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["table", "row", "column", "value", "text", "suspect"])
        for table in tables:
            for r, (row, values) in enumerate(zip(table.rows, table.numbers)):
                # the class columns and "mean ± std" (its number: the mean); not runs and failed
                for i, column in enumerate(table.header[1:-2]):
                    writer.writerow([table.title, row[0], column, "" if values[i] is None else values[i], row[i + 1],
                                     table.flags.get((r, i + 1), "")])
    return path


def write_runs_csv(runs: list[Run], path: Path) -> Path:
    metrics = sorted({k for r in runs for k in r.metrics})
    settings = sorted({k for r in runs for k in r.settings})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "dataset", "protocol", "class", "seed", "fold", "draw", "status", "run_kind",
                         "debug", *settings, *metrics, "problem", "suspect", "run_dir"])
        # a run that is not ok has no row (it is in no table): by its method
        for r in sorted(runs, key=lambda r: (natural(row_label(r.row) if r.row else r.method), natural(r.column),
                                             str(r.repetition))):
            writer.writerow([r.method, r.dataset, r.protocol, r.column, r.repetition.get("seed"),
                             r.repetition.get("fold"), r.repetition.get("draw"), r.status, r.run_kind,
                             r.debug or "", *[r.settings.get(k) for k in settings],
                             *[r.metrics.get(k) for k in metrics], r.problem or "", flag_ids([r]), str(r.path)])
    return path


def write_paper_csv(tables: Sequence[PaperTable], metrics_of, path: Path) -> Path:
    """Long format: one line per table × row × class (and mean) × metric."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["table", "budget", "flags", "split", "row", "class", "metric", "ours", "std", "n",
                         "failed", "paper", "delta", "mark", "suspect"])
        for table in tables:
            split = settings_text(table.split)
            for metric in metrics_of(table):
                for row, col, c in table.lines(metric):
                    writer.writerow([table.table, table.budget or "", " ".join(table.flags), split, row, col,
                                     metric, c.ours, c.spread, c.n, c.failed, c.paper, c.delta, c.mark,
                                     flag_ids(c.suspect)])
    return path


LABEL_WIDTH = 30  # a longer row label folds onto more lines (never cut: rows stay apart)


def column_blocks(table: Table, width: int, gap: int = 2) -> list[list[int]]:
    """The table's value columns (indices ≥ 1) in blocks that fit `width` beside the label column
    (`gap` spaces before each column), as a wide data frame is printed: in order, each block as
    many as fit (at least one)."""
    def natural_width(i: int) -> int:
        return max([len(table.header[i])] + [len(row[i]) for row in table.rows])

    label = min(LABEL_WIDTH, natural_width(0))
    blocks: list[list[int]] = [[]]
    used = label
    for i in range(1, len(table.header)):
        need = natural_width(i) + gap
        if blocks[-1] and used + need > width:
            blocks.append([])
            used = label
        blocks[-1].append(i)
        used += need
    return blocks


def print_table(table: Table, width: int | None = None, gap: int = 2,
                strong: Sequence[Sequence[bool]] | None = None) -> None:
    """A table on the terminal, borderless: what does not fit the terminal's width (`width`) is
    printed in further blocks of columns under the first, each with the row labels; labels fold
    instead of being cut, and numbers are never shortened. `gap`: spaces before each column;
    `strong`: per row, which cells are bold (the best of a class)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(width=width) if width else Console()
    if table.header[-1] == "failed" and all(row[-1] == "0" for row in table.rows):
        # a column of zeros says nothing on the terminal (the Markdown and CSV keep it)
        table = Table(table.title, table.header[:-1], [row[:-1] for row in table.rows], table.numbers, table.notes)
    blocks = column_blocks(table, console.width, gap)
    for n, block in enumerate(blocks):
        # the title on a line of its own: as a table title it would wrap to the block's width
        console.print(table.title if n == 0 else f"{table.title} (continued, {n + 1}/{len(blocks)})",
                      style="bold", highlight=False)
        view = RichTable(box=None, padding=(0, 0, 0, gap), pad_edge=False, header_style="bold underline")
        view.add_column(table.header[0], overflow="fold", max_width=LABEL_WIDTH)
        for i in block:
            view.add_column(table.header[i], justify="right", no_wrap=True)
        for r, row in enumerate(table.rows):
            cells = []
            for i in block:
                style = "red" if "failed" in row[i] or row[i].endswith("below") else " ".join(
                    (["bold"] if strong is not None and strong[r][i] else [])
                    + (["yellow"] if row[i].endswith(MARK) else [])) or None
                cells.append(f"[{style}]{row[i]}[/]" if style else row[i])
            view.add_row(row[0], *cells)
        console.print(view)
    for note in table.notes:
        console.print(note)


def metric_title(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def readme_section(tables: Sequence[PaperTable], command: str, left_out: LeftOut) -> str:
    """The Markdown between the README's reproduction markers: per table and budget ours | paper
    | Δ per cell and for the mean, the cells run, the command to re-run."""
    parts = [f"<!-- written by `{command}` from the results files: edit those, not this section -->", "",
             MARKS, ""]
    if left_out:
        parts += [left_out.line(), ""]
    for table in tables:
        rendered = paper_table(table, table.metrics(), compact=True)
        parts += [f"#### {table.title}", "", paper_caption(table), ""]
        parts += markdown(rendered).split("\n", 2)[2].rstrip("\n").split("\n")
        references = references_line(table)
        parts += ["", *([references, ""] if references else []), rerun_line(table), ""]
    return "\n".join(parts).rstrip("\n")


def replace_section(text: str, section: str, name: str = "README",
                    markers: tuple[str, str] = (README_START, README_END)) -> str:
    """`text` with everything between the markers (the reproduction section's) replaced by `section`."""
    if not has_markers(text, markers):
        raise_missing_markers(name, markers)
    start, end = text.find(markers[0]), text.find(markers[1])
    return text[:start + len(markers[0])] + "\n" + section + "\n" + text[end:]


def raise_missing_markers(name: str, markers: tuple[str, str] = (README_START, README_END)) -> None:
    what = markers[0].removeprefix("<!-- ").split(":")[0]
    raise ReportError(f"{name} has no {what} section: put the lines {markers[0]} and {markers[1]} "
                      "(once each, in that order) where the tables go")


def has_markers(text: str, markers: tuple[str, str] = (README_START, README_END)) -> bool:
    start, end = text.find(markers[0]), text.find(markers[1])
    return 0 <= start < end and text.count(markers[0]) == 1 and text.count(markers[1]) == 1

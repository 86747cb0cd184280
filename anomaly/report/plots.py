"""Which figures a report has and what goes into them; `anomaly.plots` draws them.

Per dataset × protocol (× differing protocol settings): bars per class and method with the std
over seeds / folds / draws as error bars, ROC curves per class (a colour per method, its AUROC
in the legend), score histograms normal vs anomalous per method. Per reproduced table: ours
(mean ± std) against the paper's number per cell.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from anomaly import plots
from anomaly.report.aggregate import (
    BOUNDED,
    SHORT_NAMES,
    PaperTable,
    Run,
    cells,
    columns_of,
    group_title,
    method_label,
    natural,
    protocol_group,
)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120]


def load_scores(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's test scores and anomaly labels (None: failed run, no file, or unusable scores)."""
    path = run.path / "scores.npz"
    if not run.ok or not path.exists():
        return None
    with np.load(path) as data:
        scores, anomalous = data["scores"].astype(np.float64), data["anomalous"].astype(bool)
    return (scores, anomalous) if np.isfinite(scores).all() else None


def column_title(column: str) -> str:
    """A class column as a panel title: `normal 3`, `anomalous 1`, `3 drawn`."""
    if column.startswith("¬"):
        return "anomalous " + column[1:].replace("+", ",")
    if column.endswith(" drawn"):
        return f"normal: {column}"
    return "normal " + column.replace("+", ",")


def class_axis(columns: Sequence[str]) -> str:
    return "anomalous class" if columns and all(c.startswith("¬") for c in columns) else "normal class(es)"


def plot_groups(runs: list[Run], out_dir: Path, metric: str = "auroc") -> list[Path]:
    written = []
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[protocol_group(run)].append(run)
    for group, members in sorted(groups.items(), key=lambda kv: natural(group_title(kv[0]))):
        name = slug(group_title(group).replace(" · ", "_"))
        title = group_title(group)
        by_method = cells(members, metric, key=method_label)
        methods = sorted(by_method, key=natural)
        columns = columns_of(members)[:plots.MAX_PANELS]
        colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
        metric_name = SHORT_NAMES.get(metric, metric)

        series = {}
        for m in methods:
            row = by_method[m]
            series[m] = ([row[c].mean if c in row and row[c].mean is not None else np.nan for c in columns],
                         [row[c].std or 0.0 if c in row else 0.0 for c in columns])
        written.append(plots.plot_class_bars(
            columns, series, out_dir / f"bars_{metric}_{name}.png", title=f"{metric_name} per class · {title}",
            ylabel=f"{metric_name} (mean ± std)", xlabel=class_axis(columns), bounded=metric in BOUNDED,
            colours=colours))

        aurocs = cells(members, "auroc", key=method_label)
        panels = []
        for c in columns:
            curves = []
            for m in methods:
                cell = aurocs[m].get(c)
                # in the panel: the cell's AUROC (mean ± std over its runs); the method: under the panels
                label = plots.auroc_text(cell.mean, cell.std, cell.n) if cell else None
                for r in members:
                    if method_label(r) != m or r.column != c or (scores := load_scores(r)) is None:
                        continue
                    if not plots.has_both_classes(scores[1]):
                        continue
                    fpr, tpr = plots.roc_curve(*scores)
                    curves.append((label, fpr, tpr, colours[m]))
                    label = None  # one legend entry per method
            panels.append((column_title(c), curves))
        written.append(plots.plot_roc_grid(panels, out_dir / f"roc_{name}.png",
                                           title=f"ROC, anomalies positive · {title}", series=colours))

        for m in methods:
            panels = []
            for c in columns:
                run = next((r for r in members if method_label(r) == m and r.column == c
                            and load_scores(r) is not None), None)
                panels.append((column_title(c), load_scores(run) if run else None))
            written.append(plots.plot_hist_grid(panels, out_dir / f"hist_{slug(m)}_{name}.png",
                                                title=f"test scores, first run per class · {m} · {title}"))
    return written


def plot_paper(tables: Sequence[PaperTable], metrics_of, out_dir: Path) -> list[Path]:
    """Per reproduced table and metric: ours (mean ± std per class cell, a series per row)
    against the paper's numbers (per class, or a dashed line for a number the row has as a whole)."""
    written = []
    for table in tables:
        columns = table.columns
        for metric in metrics_of(table):
            published = table.published_mean(metric)
            lines = {(row, col): c for row, col, c in table.lines(metric)}
            series = []
            for row in table.rows:
                per_class, row_number = table.row_paper(row, metric)
                comps = [lines.get((row.label, c)) for c in columns]
                series.append({
                    "label": row.label or "ours",
                    "ours": [c.ours if c else None for c in comps],
                    "spread": [c.spread if c else None for c in comps],
                    "paper": [per_class.get(c) for c in columns],
                    "paper_line": row_number if row_number is not None
                    else published if len(table.rows) == 1 else None,
                    "ours_line": lines[(row.label, "mean")].ours if (row.label, "mean") in lines else None,
                    "below": [bool(c and c.mark == "below") for c in comps],
                })
            name = SHORT_NAMES.get(metric, metric)
            written.append(plots.plot_vs_paper(
                columns, series, out_dir / f"paper_{metric}_{slug(table.title.replace(' · ', '_'))}.png",
                title=f"{name}: ours vs paper · {table.title}", ylabel=name, xlabel=class_axis(columns),
                bounded=metric in BOUNDED))
    return written

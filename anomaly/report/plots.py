"""Which figures a report has and what goes into them; `anomaly.plots` draws them.

Per dataset × protocol (× differing protocol settings): bars per class and method with the std
over seeds / folds / draws as error bars, ROC curves per class (a colour per method, its AUROC
in the legend), score histograms normal vs anomalous per method. Per reproduced table: ours
(mean ± std) against the paper's number per cell.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from anomaly import plots
from anomaly.report.group import method_label, ordered_columns, protocol_groups
from anomaly.report.labels import group_title, natural, shared_schedule
from anomaly.report.layout import PaperTable
from anomaly.report.load import Run
from anomaly.report.metrics import BOUNDED, SHORT_NAMES
from anomaly.report.statistics import cells


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120]


def load_scores(run: Run) -> tuple[np.ndarray, np.ndarray, float | None] | None:
    """The run's test scores, anomaly labels and validation threshold (None: failed run, no file,
    or unusable scores)."""
    path = run.path / "scores.npz"
    if not run.ok or not path.exists():
        return None
    with np.load(path) as data:
        scores, anomalous = data["scores"].astype(np.float64), data["anomalous"].astype(bool)
        threshold = float(data["threshold"]) if "threshold" in data.files else None
    return (scores, anomalous, threshold) if np.isfinite(scores).all() else None


def column_title(column: str) -> str:
    """A class column as a panel title: `normal 3`, `anomalous 1`, `3 drawn`."""
    if column.startswith("¬"):
        return "anomalous " + column[1:].replace("+", ",")
    if column.endswith(" drawn"):
        return f"normal: {column}"
    return "normal " + column.replace("+", ",")


def class_axis(columns: Sequence[str]) -> str:
    return "anomalous class" if columns and all(c.startswith("¬") for c in columns) else "normal class(es)"


def plot_groups(runs: list[Run], out_dir: Path, metric: str = "auroc") -> tuple[list[Path], list[str]]:
    """The figures of each dataset × protocol group, and a line for each figure not drawn (a
    figure without data is not written): (paths, lines)."""
    written, skipped = [], []
    for group, members in protocol_groups(runs):
        name = slug(group_title(group).replace(" · ", "_"))
        title = " · ".join(filter(None, [group_title(group), shared_schedule(members)]))  # what the runs trained
        by_method = cells(members, metric, key=method_label)
        methods = sorted(by_method, key=natural)
        columns = ordered_columns(members)[:plots.MAX_PANELS]
        colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
        metric_name = SHORT_NAMES.get(metric, metric)

        series = {}
        for m in methods:
            row = by_method[m]
            # an error bar only where a cell has a spread (two runs or more)
            series[m] = ([row[c].mean if c in row and row[c].mean is not None else np.nan for c in columns],
                         [row[c].std if c in row and row[c].std is not None else np.nan for c in columns])
        written.append(plots.plot_class_bars(
            columns, series, out_dir / f"bars_{metric}_{name}.png", title=f"{metric_name} per class · {title}",
            ylabel=f"{metric_name} (mean ± std)" if any(np.isfinite(v[1]).any() for v in series.values())
            else f"{metric_name} (one run per cell)", xlabel=class_axis(columns), bounded=metric in BOUNDED,
            colours=colours))

        # each run's scores.npz read once: (run, its scores) of the runs that kept usable ones
        scored = [(r, found) for r in members if (found := load_scores(r)) is not None]
        if not scored:
            skipped.append(f"{title}: no ROC curves or score histograms, since none of its {len(members)} runs "
                           "kept scores.npz (reproduced/ keeps results.json only; the run dirs have them)")
            continue
        aurocs = cells(members, "auroc", key=method_label)
        panels = []
        for c in columns:
            curves = []
            for m in methods:
                cell = aurocs[m].get(c)
                # in the panel: the cell's AUROC (mean ± std over its runs); the method: under the panels
                label = plots.auroc_text(cell.mean, cell.std, cell.n) if cell else None
                for r, scores in scored:
                    if method_label(r) != m or r.column != c:
                        continue
                    if not plots.has_both_classes(scores[1]):
                        continue
                    fpr, tpr = plots.roc_curve(scores[0], scores[1])
                    curves.append((label, fpr, tpr, colours[m]))
                    label = None  # one legend entry per method
            panels.append((column_title(c), curves))
        written.append(plots.plot_roc_grid(panels, out_dir / f"roc_{name}.png",
                                           title=f"ROC, anomalies positive · {title}", series=colours))

        for m in methods:
            panels = []
            for c in columns:
                panels.append((column_title(c), next((scores for r, scores in scored
                                                       if method_label(r) == m and r.column == c), None)))
            written.append(plots.plot_hist_grid(panels, out_dir / f"hist_{slug(m)}_{name}.png",
                                                title=f"test scores, first run per class · {m} · {title}"))
    return written, skipped


# a row key the papers draw their results over, and its axis label (share: shown in %)
SETTING_AXES = {"outlier_ratio": ("outlier share", True), "anomaly_ratio": ("anomaly share", True),
                "contamination": ("contamination", True), "n_normal": ("normal objects drawn", False),
                "n_train": ("training images", False)}


def row_setting(table: PaperTable) -> tuple[str, list[float]] | None:
    """(key, value per row) where a table's rows are one numeric setting (`outlier_ratio=0.1`, …)
    in more than one value: its figure is then drawn over that setting."""
    keys = {tuple(k for k, _ in row.settings) for row in table.rows}
    if len(table.rows) < 2 or len(keys) != 1 or len(next(iter(keys))) != 1:
        return None
    values = [row.settings[0][1] for row in table.rows]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return next(iter(keys))[0].rsplit(".", 1)[-1], [float(v) for v in values]


def plot_paper(tables: Sequence[PaperTable], metrics_of, out_dir: Path) -> list[Path]:
    """Per reproduced table and metric: ours against the paper. A table whose rows are one numeric
    setting (GPND's outlier shares, COIL-100's objects drawn): our row means with a band over
    folds / seeds / draws and the paper's line, over that setting (the papers' own figure).
    Otherwise per class: ours (mean ± std per class cell, a series per row) against the paper's
    numbers (per class, or a dashed line for a number the row has as a whole)."""
    written = []
    for table in tables:
        columns = table.columns
        setting = row_setting(table)
        for metric in metrics_of(table):
            name = metric_axis(metric, table.runs)
            path = out_dir / f"paper_{metric}_{slug(table.title.replace(' · ', '_'))}.png"
            lines = {(row, col): c for row, col, c in table.lines(metric)}
            if setting is not None:
                key, xs = setting
                axis, percent = SETTING_AXES.get(key, (key, False))
                means = [lines.get((row.label, "mean")) for row in table.rows]
                written.append(plots.plot_vs_setting(
                    xs, [m.ours if m else None for m in means], [m.spread if m else None for m in means],
                    [m.paper if m else None for m in means], path, title=f"{table.title}",
                    ylabel=name, xlabel=axis, bounded=metric in BOUNDED, percent=percent,
                    apart=[m.partial if m else None for m in means]))
                continue
            published = table.published_mean(metric)
            series = []
            for row in table.rows:
                per_class, row_number = table.row_paper(row, metric)
                comps = [lines.get((row.label, c)) for c in columns]
                mean = lines.get((row.label, "mean"))
                partial = mean.partial if mean is not None else None  # no mean of ours beside the paper's
                series.append({
                    "label": (row.label or "ours") + (f" ({partial}: no mean)" if partial else ""),
                    "ours": [c.ours if c else None for c in comps],
                    "spread": [c.spread if c else None for c in comps],
                    "paper": [per_class.get(c) for c in columns],
                    "paper_line": row_number if row_number is not None
                    else published if len(table.rows) == 1 else None,
                    "ours_line": mean.ours if mean is not None and not partial else None,
                    "below": [bool(c and c.mark == "below") for c in comps],
                })
            means = [lines.get((r.label, "mean")) for r in table.rows]
            partial = "".join(f"\nours: {p} (the paper's line is its mean over all)"
                              for p in dict.fromkeys(m.partial for m in means if m is not None and m.partial))
            written.append(plots.plot_vs_paper(
                columns, series, path, title=f"ours vs paper · {table.title}{partial}", ylabel=name,
                xlabel=class_axis(columns), bounded=metric in BOUNDED))
    return written


def metric_axis(metric: str, runs: Sequence[Run]) -> str:
    """An axis label that says which F1 (`F1, inliers positive`)."""
    resolved = {r.metric_key(metric) for r in runs}
    key = resolved.pop() if len(resolved) == 1 else metric
    return {"f1": "F1, anomalies positive", "f1_inlier": "F1, inliers positive"}.get(key, SHORT_NAMES.get(key, key))

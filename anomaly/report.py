"""`python -m anomaly.report <run or multirun dirs…>`: paper-style tables and plots from results.json.

Every `results.json` below the given dirs is one run. Runs are grouped into table rows by method ×
dataset × protocol, plus whatever protocol or method setting varies among them (an outlier ratio,
`method.attack`, …); columns are the classes (the normal class(es), or `¬k` where the protocol was
given the anomalous class). A cell is the mean over the runs that differ only in seed, fold or
draw; `mean` is the mean of the class cells and `± std` the standard deviation over all of the
row's runs. Failed runs (status failed, or scores that were not usable) are shown as such and
never averaged in; a class that a row lacks while another row has it is shown as missing.

Writes into `--out` (default `<first dir>/report`): `report.md`, one CSV per metric
(`auroc.csv`, `f1.csv`: the tables), `runs.csv` (one line per run), and plots: per-class bars
with error bars, ROC curves per class overlaid per method, score histograms normal vs anomalous.
The F1 is the one the protocol's paper reported (the run's threshold strategy: inlier-positive
F1 where it was `f1_inlier`), unless `--f1` says which.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

# protocol keys that repeat an experiment (averaged over) rather than define it
REPETITION_KEYS = {"seed", "fold", "draw"}
# protocol keys that say which classes are normal (they make the columns)
CLASS_KEYS = {"name", "normal", "normal_names", "anomalous"}


@dataclass
class Run:
    path: Path
    method: str
    dataset: str
    protocol: str
    column: str
    settings: dict[str, Any]
    repetition: dict[str, Any]
    status: str
    metrics: dict[str, float | None]
    threshold_strategy: str | None
    problem: str | None = None
    row: tuple = field(default=(), compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self, metric: str) -> float | None:
        if metric == "f1_paper":
            metric = "f1_inlier" if self.threshold_strategy == "f1_inlier" else "f1"
        value = self.metrics.get(metric)
        return None if value is None or not math.isfinite(value) else float(value)


def _values(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def column_label(protocol: dict) -> str:
    """The class column of a run: its normal class names, or ¬ its anomalous classes."""
    anomalous = _values(protocol.get("anomalous"))
    if anomalous:
        return "¬" + "+".join(str(a) for a in anomalous)
    names = protocol.get("normal_names") or _values(protocol.get("normal"))
    return "+".join(str(n) for n in names) if names else "default"


def load_runs(dirs: Sequence[str | Path]) -> list[Run]:
    """Every results.json below `dirs` (a report dir of an earlier report is skipped)."""
    runs, seen = [], set()
    for root in dirs:
        root = Path(root)
        if not root.exists():
            raise SystemExit(f"error: {root}: no such directory")
        paths = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for path in paths:
            if path.resolve() in seen or "report" in path.relative_to(root).parts[:-1]:
                continue
            seen.add(path.resolve())
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                print(f"warning: skipped {path}: {err}", file=sys.stderr)
                continue
            if data.get("status") == "resumed":  # finished by a later run (ckpt_path=last): shown there
                continue
            runs.append(run_from_results(path, data))
    return runs


def run_from_results(path: Path, data: dict) -> Run:
    protocol = dict(data.get("protocol") or {})
    settings = {f"protocol.{k}": v for k, v in protocol.items()
                if k not in CLASS_KEYS | REPETITION_KEYS and not isinstance(v, (dict, list))}
    settings.update({f"method.{k}": v for k, v in (data.get("method_settings") or {}).items()
                     if not isinstance(v, dict)})
    repetition = {k: protocol.get(k) for k in sorted(REPETITION_KEYS) if k in protocol}
    repetition["seed"] = data.get("seed", protocol.get("seed"))
    status = data.get("status") or "ok"
    return Run(path=path.parent, method=str(data.get("method")), dataset=str(data.get("dataset")),
               protocol=str(protocol.get("name", "?")), column=column_label(protocol),
               settings=settings, repetition=repetition, status=status,
               metrics=data.get("metrics") or {}, threshold_strategy=data.get("threshold_strategy"),
               problem=data.get("problem"))


def assign_rows(runs: list[Run]) -> None:
    """Row key = method, dataset, protocol and the settings that vary among those runs."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.method, run.dataset, run.protocol)].append(run)
    for key, members in groups.items():
        names = sorted({k for r in members for k in r.settings})
        # a key some runs lack (a failed run records the settings as requested, not as resolved)
        # varies only if the runs that have it disagree
        varying = [k for k in names if len({_hashable(r.settings[k]) for r in members if k in r.settings}) > 1]
        for run in members:
            run.row = key + (tuple((k, _hashable(run.settings.get(k))) for k in varying),)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def row_label(row: tuple) -> str:
    method, dataset, protocol, settings = row
    text = f"{method} · {dataset} · {protocol}"
    if settings:
        text += " · " + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in settings)
    return text


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# ---- tables --------------------------------------------------------------------------------------
@dataclass
class Cell:
    values: list[float]
    failed: int = 0

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values)) if len(self.values) > 1 else None

    def add(self, run: "Run", metric: str) -> None:
        """A run's value, or a failure when the run failed or has no finite value."""
        value = run.value(metric) if run.ok else None
        if value is None:
            self.failed += 1
        else:
            self.values.append(value)

    def text(self, with_std: bool = False) -> str:
        if not self.values:
            return "failed" if self.failed else "—"
        out = f"{self.mean:.3f}"
        if with_std and self.std is not None:
            out += f" ± {self.std:.3f}"
        if self.failed:
            out += f" ({self.failed} failed)"
        return out


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    numbers: list[list[float | None]]  # the same cells as numbers (None: missing / failed)


def cells(runs: Iterable[Run], metric: str) -> dict[tuple, dict[str, Cell]]:
    """row → column → Cell."""
    out: dict[tuple, dict[str, Cell]] = defaultdict(dict)
    for run in runs:
        out[run.row].setdefault(run.column, Cell([])).add(run, metric)
    return out


def summary(row_cells: dict[str, Cell]) -> tuple[float | None, float | None, int, int]:
    """(mean of the class means, std over all runs, runs averaged, runs failed)."""
    means = [c.mean for c in row_cells.values() if c.mean is not None]
    every = [v for c in row_cells.values() for v in c.values]
    failed = sum(c.failed for c in row_cells.values())
    return (float(np.mean(means)) if means else None,
            float(np.std(every)) if len(every) > 1 else None, len(every), failed)


def class_table(runs: list[Run], metric: str, title: str) -> Table:
    """Rows method × dataset × protocol (× varying settings), columns the classes."""
    by_row = cells(runs, metric)
    columns = sorted({r.column for r in runs}, key=_natural)
    rows, numbers = [], []
    for row in sorted(by_row, key=lambda r: tuple(map(str, r))):
        row_cells = by_row[row]
        mean, std, n, failed = summary(row_cells)
        incomplete = any(c not in row_cells or not row_cells[c].values for c in columns)
        mean_text = "—" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
        if incomplete and mean is not None:
            mean_text += " *"
        rows.append([row_label(row)] + [row_cells[c].text() if c in row_cells else "—" for c in columns]
                    + [mean_text, str(n), str(failed)])
        numbers.append([row_cells[c].mean if c in row_cells else None for c in columns] + [mean, std])
    return Table(title, ["method · dataset · protocol"] + columns + ["mean ± std", "runs", "failed"],
                 rows, numbers)


def compare_tables(runs: list[Run], metric: str, metric_name: str) -> list[Table]:
    """Per dataset × protocol (× varying protocol settings): rows the classes, one column per
    method (methods that differ in a setting are separate columns)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        method, dataset, protocol, settings = run.row
        protocol_settings = tuple(s for s in settings if s[0].startswith("protocol."))
        groups[(dataset, protocol, protocol_settings)].append(run)
    tables = []
    for (dataset, protocol, protocol_settings), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        def method_label(run: Run) -> str:
            extra = [f"{k.split('.', 1)[1]}={v}" for k, v in run.row[3] if k.startswith("method.")]
            return run.method + (f" ({', '.join(extra)})" if extra else "")

        by_method: dict[str, dict[str, Cell]] = defaultdict(dict)
        for run in members:
            by_method[method_label(run)].setdefault(run.column, Cell([])).add(run, metric)
        methods = sorted(by_method)
        columns = sorted({r.column for r in members}, key=_natural)
        rows, numbers = [], []
        for column in columns:
            row_cells = [by_method[m].get(column) for m in methods]
            rows.append([column] + [c.text(with_std=True) if c else "—" for c in row_cells])
            numbers.append([c.mean if c else None for c in row_cells])
        mean_row = ["mean"]
        for m in methods:
            mean, std, _, _ = summary(by_method[m])
            incomplete = any(c not in by_method[m] or not by_method[m][c].values for c in columns)
            mean_row.append("—" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std else "")
                            + (" *" if incomplete else ""))
        rows.append(mean_row)
        numbers.append([summary(by_method[m])[0] for m in methods])
        title = f"{metric_name} · {dataset} · {protocol}"
        if protocol_settings:
            title += " · " + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in protocol_settings)
        tables.append(Table(title, ["class"] + methods, rows, numbers))
    return tables


def markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def write_csv(table: Table, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(table.header)
        writer.writerows(table.rows)


def write_runs_csv(runs: list[Run], path: Path) -> None:
    metrics = sorted({k for r in runs for k in r.metrics})
    settings = sorted({k for r in runs for k in r.settings})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "dataset", "protocol", "class", "seed", "fold", "draw", "status",
                         *settings, *metrics, "problem", "run_dir"])
        for r in sorted(runs, key=lambda r: (str(r.row), _natural(r.column), str(r.repetition))):
            writer.writerow([r.method, r.dataset, r.protocol, r.column, r.repetition.get("seed"),
                             r.repetition.get("fold"), r.repetition.get("draw"), r.status,
                             *[r.settings.get(k) for k in settings],
                             *[r.metrics.get(k) for k in metrics], r.problem or "", str(r.path)])


def print_table(table: Table) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    rich_table = RichTable(title=table.title, title_justify="left")
    for i, name in enumerate(table.header):
        rich_table.add_column(name, justify="left" if i == 0 else "right")
    for row in table.rows:
        styled = [f"[red]{c}[/]" if "failed" in c else c for c in row]
        rich_table.add_row(*styled)
    Console().print(rich_table)


# ---- plots ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120]


def _load_scores(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    path = run.path / "scores.npz"
    if not run.ok or not path.exists():
        return None
    with np.load(path) as data:
        return data["scores"].astype(np.float64), data["anomalous"].astype(bool)


def _grid(n: int, plt, size: float = 2.6):
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.5, size * rows + 0.6), dpi=110,
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


MAX_PLOT_CLASSES = 20  # beyond this a grid of small plots is unreadable: the first 20 are drawn


def plot_groups(runs: list[Run], out_dir: Path, metric: str = "auroc") -> list[Path]:
    """Per dataset × protocol (× setting): bars per class and method, ROC curves, histograms."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    written = []
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        protocol_settings = tuple(s for s in run.row[3] if s[0].startswith("protocol."))
        groups[(run.dataset, run.protocol, protocol_settings)].append(run)
    for (dataset, protocol, settings), members in groups.items():
        name = _slug("_".join([dataset, protocol] + [f"{k.split('.', 1)[1]}={v}" for k, v in settings]))
        title = f"{dataset} · {protocol}" + "".join(f" · {k.split('.', 1)[1]}={v}" for k, v in settings)
        label = lambda r: r.method + "".join(f" {k.split('.', 1)[1]}={v}" for k, v in r.row[3]  # noqa: E731
                                             if k.startswith("method."))
        methods = sorted({label(r) for r in members})
        columns = sorted({r.column for r in members}, key=_natural)[:MAX_PLOT_CLASSES]
        colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}

        # bars with error bars (std over seeds / folds)
        fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(columns) * len(methods) + 1.5), 3.8), dpi=110)
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            means, stds = [], []
            for c in columns:
                vals = [r.value(metric) for r in members if label(r) == m and r.column == c and r.ok]
                vals = [v for v in vals if v is not None]
                means.append(np.mean(vals) if vals else np.nan)
                stds.append(np.std(vals) if len(vals) > 1 else 0.0)
            x = np.arange(len(columns)) + (i - (len(methods) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=2, label=m, color=colours[m])
        ax.set_xticks(np.arange(len(columns)), columns, rotation=45 if len(columns) > 10 else 0)
        ax.set_ylim(0.0, 1.0 if metric != "fpr95" else None)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per class · {title}", fontsize=9)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.legend(fontsize=7, loc="lower right")
        written.append(_save(fig, out_dir / f"bars_{metric}_{name}.png", plt))

        # ROC curves: one panel per class, one colour per method (each run a thin line)
        fig, axes = _grid(len(columns), plt)
        for ax, c in zip(axes, columns):
            for m in methods:
                labelled = False
                for r in members:
                    if label(r) != m or r.column != c or (scores := _load_scores(r)) is None:
                        continue
                    if scores[1].all() or not scores[1].any():
                        continue
                    fpr, tpr, _ = roc_curve(scores[1], scores[0])
                    ax.plot(fpr, tpr, lw=1.0, alpha=0.8, color=colours[m], label=None if labelled else m)
                    labelled = True
            ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
            ax.set_title(f"class {c}", fontsize=8)
            ax.tick_params(labelsize=6)
        axes[0].legend(fontsize=6, loc="lower right")
        fig.suptitle(f"ROC (anomalies positive) · {title}", fontsize=9)
        written.append(_save(fig, out_dir / f"roc_{name}.png", plt))

        # score histograms, normal vs anomalous: one figure per method (its first run per class)
        for m in methods:
            fig, axes = _grid(len(columns), plt)
            for ax, c in zip(axes, columns):
                run = next((r for r in members if label(r) == m and r.column == c and r.ok
                            and (r.path / "scores.npz").exists()), None)
                scores = _load_scores(run) if run else None
                if scores is None:
                    ax.set_title(f"class {c}: no scores", fontsize=8)
                    continue
                values, anomalous = scores
                bins = np.histogram_bin_edges(values[np.isfinite(values)], bins=40)
                ax.hist(values[~anomalous], bins=bins, alpha=0.6, density=True, label="normal", color="tab:blue")
                ax.hist(values[anomalous], bins=bins, alpha=0.6, density=True, label="anomalous", color="tab:red")
                ax.set_title(f"class {c}", fontsize=8)
                ax.tick_params(labelsize=6)
            axes[0].legend(fontsize=6)
            fig.suptitle(f"anomaly scores · {m} · {title}", fontsize=9)
            written.append(_save(fig, out_dir / f"hist_{_slug(m)}_{name}.png", plt))
    return written


# ---- entry point ---------------------------------------------------------------------------------
METRIC_NAMES = {"auroc": "AUROC", "f1_paper": "F1 (the protocol paper's)", "f1": "F1 (anomalies positive)",
                "f1_inlier": "F1 (inliers positive)", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out",
                "fpr95": "FPR at 95 % TPR"}


def report(dirs: Sequence[str | Path], out: str | Path | None = None, compare: bool = False,
           metrics: Sequence[str] = ("auroc", "f1_paper"), plots: bool = True,
           echo: bool = True) -> dict[str, Any]:
    """Build the report; returns {"runs", "tables", "files"} (the tables as `Table`s by metric)."""
    runs = load_runs(dirs)
    if not runs:
        raise SystemExit(f"error: no results.json below {', '.join(map(str, dirs))}")
    assign_rows(runs)
    out_dir = Path(out) if out else Path(dirs[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Table] = {}
    compared: dict[str, list[Table]] = {}
    parts = ["# anomaly report", "",
             f"{len(runs)} runs ({sum(r.ok for r in runs)} ok, {sum(not r.ok for r in runs)} failed) from "
             + ", ".join(f"`{d}`" for d in dirs) + ".", "",
             "Cells: mean over seeds / folds / draws. `mean ± std`: mean of the class cells ± std over "
             "all runs of the row. `*`: some classes missing or failed (not averaged in). "
             "`¬k`: class k was the anomaly.", ""]
    files = []
    for metric in metrics:
        name = METRIC_NAMES.get(metric, metric)
        table = class_table(runs, metric, name)
        tables[metric] = table
        parts += [markdown(table), ""]
        csv_path = out_dir / f"{'f1' if metric == 'f1_paper' else metric}.csv"
        write_csv(table, csv_path)
        files.append(csv_path)
        if echo:
            print_table(table)
        if compare:
            compared[metric] = compare_tables(runs, metric, name)
            parts += ["## " + name + " side by side", ""] + [markdown(t) + "\n" for t in compared[metric]]
            if echo:
                for t in compared[metric]:
                    print_table(t)
    failed = [r for r in runs if not r.ok]
    if failed:
        parts += ["## Failed runs", "", "| method | dataset | protocol | class | seed | problem | run dir |",
                  "|---|---|---|---|---|---|---|"]
        parts += [f"| {r.method} | {r.dataset} | {r.protocol} | {r.column} | {r.repetition.get('seed')} | "
                  f"{(r.problem or r.status).splitlines()[0][:160].replace('|', '/')} | `{r.path}` |" for r in failed]
        parts.append("")
    if plots:
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        pngs = plot_groups(runs, plot_dir)
        parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in pngs] + [""]
        files += pngs
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(parts))
    runs_path = out_dir / "runs.csv"
    write_runs_csv(runs, runs_path)
    files = [md_path, runs_path] + files
    if echo:
        print(f"report: {md_path}")
    return {"runs": runs, "tables": tables, "compare": compared, "files": files, "out_dir": out_dir}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m anomaly.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run or multirun dirs (searched for results.json)")
    parser.add_argument("--out", help="report dir (default: <first dir>/report)")
    parser.add_argument("--compare", action="store_true",
                        help="also tables with the methods side by side (rows = classes)")
    parser.add_argument("--metric", action="append", dest="metrics",
                        help="metrics to tabulate (repeatable): auroc, f1_paper (default), f1, "
                             "f1_inlier, aupr_in, aupr_out, fpr95")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    report(args.dirs, args.out, compare=args.compare, metrics=args.metrics or ("auroc", "f1_paper"),
           plots=not args.no_plots)


if __name__ == "__main__":
    main()

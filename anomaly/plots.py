"""Every figure of the project, drawn from plain arrays.

- A run's own figures (written by `anomaly.results` / `anomaly.pipeline`): `plot_roc`,
  `plot_score_hist`, `plot_examples`.
- The report's figures (`anomaly.report.plots` picks the runs): `plot_class_bars`,
  `plot_roc_grid`, `plot_hist_grid`, `plot_vs_paper`.

One style (`STYLE`: fonts and tick labels readable in a two-column paper, 150 dpi), one way to
make and save a figure (`pyplot`, `save`), one ROC code path (`roc_curve`: the metrics module's
ranks through torchmetrics' `binary_roc`, the computation behind the AUROC in results.json).
Titles name classes as people write them (`normal 1,3,77`, `anomalous 1`), never as a Python list.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

STYLE = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 7.5, "figure.titlesize": 10, "figure.dpi": 150,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.25, "grid.linewidth": 0.5,
}
SAVE_DPI = 150
MAX_PANELS = 20  # beyond this a grid of small plots is unreadable: the first 20 are drawn
NORMAL_COLOUR, ANOMALY_COLOUR, PAPER_COLOUR, BELOW_COLOUR = "tab:blue", "tab:red", "black", "tab:red"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, with the project's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (4.5, 3.5)):
    """A figure of rows × cols axes (a flat list; unused trailing axes hidden by `save`)."""
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    return fig, list(axes.flat)


def save(fig, path: str | Path) -> Path:
    """Write the figure (tight bounding box) and free it."""
    plt = pyplot()
    # the dpi is passed here, not set in rcParams: other code's figures in the process keep theirs
    fig.savefig(path, bbox_inches="tight", dpi=SAVE_DPI)
    plt.close(fig)
    return Path(path)


def grid(n: int, panel: float = 2.4, max_cols: int = 5):
    """A figure with `n` square panels, at most `max_cols` a row; the unused ones hidden."""
    n = max(1, n)
    panel = max(panel, 3.4) if n <= 2 else panel  # room for the labels and the title
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = figure(rows, cols, size=(panel * cols + 0.4, panel * rows + 0.6))
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


# ---- text ----------------------------------------------------------------------------------------
def _listed(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def protocol_classes(protocol: dict) -> tuple[str, list[str]]:
    """("anomalous", names) when the protocol was given its anomalous classes, else ("normal",
    names). Reads both layouts of results.json: `normal` = names (with `normal_ids`), or the older
    `normal` = ids with `normal_names`."""
    anomalous = _listed(protocol.get("anomalous"))
    if anomalous:
        return "anomalous", [str(a) for a in anomalous]
    names = _listed(protocol.get("normal_names")) or _listed(protocol.get("normal"))
    return "normal", [str(n) for n in names]


def classes_text(protocol: dict) -> str:
    """`normal 1,3,77` / `anomalous 1` (`normal ?` when nothing is recorded)."""
    role, names = protocol_classes(protocol)
    return f"{role} {','.join(names) if names else '?'}"


# protocol settings a run's figure titles name (with the classes and the seed)
TITLE_KEYS = ("outlier_ratio", "anomaly_ratio", "contamination", "fold", "draw", "n_train")


def run_title(summary: dict[str, Any]) -> str:
    """A run's figure title: `gpnd · mnist · gpnd_folds · normal 3 · outlier_ratio 0.5 · fold 0 ·
    seed 0 · 6/80 ep` (the method, data, protocol, classes, the protocol's ratio / fold / draw, the
    seed, the epochs against the paper's)."""
    protocol = summary.get("protocol") or {}
    parts = [str(summary.get("method")), str(summary.get("dataset")), str(protocol.get("name", "?")),
             classes_text(protocol)]
    parts += [f"{k} {protocol[k]}" for k in TITLE_KEYS if protocol.get(k) is not None]
    parts.append(f"seed {summary.get('seed')}")
    from anomaly.provenance import schedule_text

    schedule = schedule_text(summary)  # what the run trained ("6/80 ep")
    return " · ".join(parts + ([schedule] if schedule else []))


def auroc_text(auroc: float | None, std: float | None = None, n: int = 1) -> str:
    """`AUROC 0.912`, `AUROC 0.912 ± 0.004, n=5` ("" without a finite AUROC)."""
    if auroc is None or not math.isfinite(auroc):
        return ""
    text = f"AUROC {auroc:.3f}"
    if std is not None and n > 1:
        text += f" ± {std:.3f}"
    return text + (f", n={n}" if n > 1 else "")


def auroc_label(label: str, auroc: float | None, std: float | None = None, n: int = 1) -> str:
    """`normal 3 (AUROC 0.912)`, `gpnd (AUROC 0.912 ± 0.004, n=5)`."""
    text = auroc_text(auroc, std, n)
    return f"{label} ({text})" if text else label


# ---- ROC -----------------------------------------------------------------------------------------
def roc_curve(scores: Any, anomalous: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) with anomalies positive and higher scores more
    anomalous; the scores enter as normalised ranks, as for the AUROC of the metrics."""
    import torch
    from torchmetrics.functional.classification import binary_roc

    from anomaly.evaluation.metrics import ranks

    s = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    y = torch.as_tensor(np.asarray(anomalous).astype(bool)).long()
    fpr, tpr, _ = binary_roc(ranks(s), y)
    return fpr.numpy(), tpr.numpy()


def has_both_classes(anomalous: Any) -> bool:
    a = np.asarray(anomalous).astype(bool)
    return bool(a.any() and not a.all())


def format_roc_axes(ax, xlabel: bool = True, ylabel: bool = True, short: bool = False) -> None:
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    if xlabel:
        ax.set_xlabel("false positive rate" if short else "false positive rate (normals flagged)")
    if ylabel:
        ax.set_ylabel("true positive rate" if short else "true positive rate (anomalies flagged)")


def plot_roc(scores: Any, anomalous: Any, auroc: float | None, path: str | Path, title: str = "",
             label: str = "ROC", threshold: float | None = None) -> Path:
    """One run's ROC curve; the legend names the run's classes and its AUROC, and the point the
    validation threshold gives on the test split is marked (anomalous: score > threshold)."""
    fig, (ax,) = figure(size=(4.2, 4.4))
    fpr, tpr = roc_curve(scores, anomalous)
    ax.plot(fpr, tpr, lw=2, label=auroc_label(label, auroc))
    if threshold is not None and math.isfinite(threshold):
        s, a = np.asarray(scores, dtype=np.float64), np.asarray(anomalous).astype(bool)
        at_fpr, at_tpr = float((s[~a] > threshold).mean()), float((s[a] > threshold).mean())
        ax.plot([at_fpr], [at_tpr], "o", ms=7, mfc="none", mec="k", mew=1.5,
                label=f"validation threshold (FPR {at_fpr:.2f}, TPR {at_tpr:.2f})")
    format_roc_axes(ax)
    ax.set_title(title)
    ax.legend(loc="lower right")
    return save(fig, path)


def figure_legend(fig, entries: dict[str, Any], marker: str | None = None) -> None:
    """One legend under the figure: label → colour (lines, or `marker`s)."""
    from matplotlib.lines import Line2D

    if not entries:
        return
    handles = [Line2D([], [], color=c, lw=0 if marker else 2, marker=marker) for c in entries.values()]
    fig.legend(handles, list(entries), loc="outside lower center", ncols=min(len(entries), 2))


def plot_roc_grid(panels: Sequence[tuple[str, Sequence[tuple[str | None, np.ndarray, np.ndarray, Any]]]],
                  path: str | Path, title: str = "", series: dict[str, Any] | None = None) -> Path:
    """One panel per (panel title, curves); a curve is (its legend label in the panel, e.g.
    `AUROC 0.912`, or None; fpr; tpr; colour). `series`: label → colour for the figure's legend
    under the panels (the methods)."""
    panels = list(panels)[:MAX_PANELS]
    fig, axes = grid(len(panels))
    cols = min(len(panels), 5)
    for i, (ax, (name, curves)) in enumerate(zip(axes, panels)):
        for label, fpr, tpr, colour in curves:
            ax.plot(fpr, tpr, lw=1.2, alpha=0.85, color=colour, label=label)
        format_roc_axes(ax, xlabel=i >= len(panels) - cols, ylabel=i % cols == 0, short=True)
        ax.set_title(name)
        if any(label for label, *_ in curves):
            ax.legend(loc="lower right", fontsize=6.5, handlelength=1.2)
        elif not curves:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", color="grey", transform=ax.transAxes)
    figure_legend(fig, series or {})
    if title:
        fig.suptitle(title)
    return save(fig, path)


# ---- score histograms ----------------------------------------------------------------------------
def draw_hist(ax, scores: Any, anomalous: Any, threshold: float | None = None, bins: int = 50) -> None:
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(anomalous).astype(bool)
    finite = np.isfinite(s)
    edges = np.histogram_bin_edges(s[finite], bins=bins) if finite.any() else bins
    ax.hist(s[~a & finite], bins=edges, alpha=0.6, density=True, color=NORMAL_COLOUR,
            label=f"normal (n={int((~a).sum())})")
    ax.hist(s[a & finite], bins=edges, alpha=0.6, density=True, color=ANOMALY_COLOUR,
            label=f"anomalous (n={int(a.sum())})")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, c="k", ls="--", lw=1, label=f"threshold {threshold:.3g} (validation)")


def plot_score_hist(scores: Any, anomalous: Any, threshold: float | None, path: str | Path,
                    title: str = "") -> Path:
    """One run's test scores, normal against anomalous, with its validation threshold."""
    fig, (ax,) = figure(size=(5.5, 3.4))
    draw_hist(ax, scores, anomalous, threshold)
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density", title=title)
    ax.legend()
    return save(fig, path)


def plot_hist_grid(panels: Sequence[tuple[str, tuple | None]], path: str | Path, title: str = "") -> Path:
    """One panel per (panel title, (scores, anomalous[, validation threshold]) or None)."""
    panels = list(panels)[:MAX_PANELS]
    fig, axes = grid(len(panels))
    cols = min(len(panels), 5)
    drawn = []
    for i, (ax, (name, data)) in enumerate(zip(axes, panels)):
        ax.set_title(name)
        if data is None:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", color="grey", transform=ax.transAxes)
            continue
        draw_hist(ax, *data[:3], bins=40)
        drawn.append(ax)
        if i >= len(panels) - cols:
            ax.set_xlabel("anomaly score")
        if i % cols == 0:
            ax.set_ylabel("density")
    if drawn:
        drawn[0].legend(fontsize=6.5)
    if title:
        fig.suptitle(title)
    return save(fig, path)


# ---- examples ------------------------------------------------------------------------------------
def plot_examples(groups: dict[str, tuple[Any, Any, Sequence[str]]], path: str | Path, title: str = "") -> Path:
    """Rows of test images (tensors N×C×H×W in [0, 1]), each with its caption above it (its class
    and score), over their reconstructions where the method has them (None: inputs only); a
    group per {name: (inputs, reconstructions or None, captions)}."""
    import torch
    from torchvision.utils import make_grid

    heights = [1.5 if recon is None else 2.4 for _, recon, _ in groups.values()]
    fig, axes = figure(len(groups), 1, size=(8, sum(heights)))
    for ax, (name, (inputs, recon, captions)) in zip(axes, groups.items()):
        rows = inputs if recon is None else torch.cat([inputs, recon])
        image = make_grid(rows, nrow=len(inputs), padding=1, pad_value=0.5)
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        step = inputs.shape[-1] + 1  # make_grid's cell: the image and one pixel of padding
        for i, caption in enumerate(captions):
            ax.text(1 + i * step + step / 2, -1, caption, ha="center", va="bottom", fontsize=6.5)
        ax.set_title(f"{name}" + ("" if recon is None else ": inputs over reconstructions"), pad=18)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save(fig, path)


# ---- report: per-class bars, ours against the paper ----------------------------------------------
def plot_class_bars(columns: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float]]],
                    path: str | Path, title: str = "", ylabel: str = "", xlabel: str = "class",
                    bounded: bool = True, colours: dict[str, Any] | None = None) -> Path:
    """Grouped bars: one group per column (class), one bar per series (method) with its std as
    the error bar. `series`: label → (means, stds), NaN where a class has no value (mean) or no
    spread (std: no error bar)."""
    labels = list(series)
    # at most a page's width (9 in): more bars get thinner, the text keeps its size
    fig, (ax,) = figure(size=(min(9.0, max(4.5, 0.16 * len(columns) * max(1, len(labels)) + 2.0)), 3.4))
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(columns))
    for i, label in enumerate(labels):
        means, stds = (np.asarray(v, dtype=float) for v in series[label])
        # NaN std: no error bar (a cell of one run has no spread to show)
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, means, width, yerr=stds if np.isfinite(stds).any() else None,
               capsize=2, label=label, color=(colours or {}).get(label), error_kw={"lw": 0.8})
    ax.set_xticks(x, [str(c) for c in columns], rotation=45 if len(columns) > 10 else 0,
                  ha="right" if len(columns) > 10 else "center")
    if bounded:
        ax.set_ylim(0.0, 1.02)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(axis="x", visible=False)
    if labels:  # under the axes: over the bars it would hide some
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(labels), 6))
    return save(fig, path)


def plot_vs_paper(columns: Sequence[str], series: Sequence[dict], path: str | Path, title: str = "",
                  ylabel: str = "", xlabel: str = "class", bounded: bool = True) -> Path:
    """Ours against the paper per class. A series per table row: {label, ours, spread, paper,
    paper_line, ours_line, below}: ours as dots with the std over seeds / folds / draws as error bars (red:
    below the paper by more than that), the paper's per-class numbers as black diamonds beside
    them, a number the paper gives for the row as a whole as a dashed line in the row's colour
    (and our mean over the row's classes, `ours_line`, as a thin solid one)."""
    def arr(values: Iterable[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)

    series = list(series)
    fig, (ax,) = figure(size=(max(4.5, 0.5 * len(columns) * max(1, len(series)) ** 0.5 + 2.2), 3.5))
    x = np.arange(len(columns), dtype=float)
    width = 0.8 / max(1, len(series))
    low = []
    paper_labelled = below_labelled = False
    for i, s in enumerate(series):
        colour = f"C{i % 10}"
        offset = (i - (len(series) - 1) / 2) * width
        ours, spread, paper = arr(s["ours"]), arr(s["spread"]), arr(s["paper"])
        below = np.asarray(s["below"], dtype=bool)
        label = (s["label"] if len(series) > 1 else "ours (mean ± std)" if np.isfinite(spread).any()
                 else "ours (one run per cell)")
        ax.errorbar(x + offset - width * 0.2, ours, yerr=np.nan_to_num(spread), fmt="o", ms=4.5, capsize=2.5,
                    lw=1, color=colour, label=label)
        if below.any():
            ax.plot(x[below] + offset - width * 0.2, ours[below], "o", ms=4.5, color=BELOW_COLOUR, zorder=4,
                    label=None if below_labelled else "below the paper by more than the std")
            below_labelled = True
        if np.isfinite(paper).any():
            ax.plot(x + offset + width * 0.2, paper, "D", ms=4, color=PAPER_COLOUR,
                    label=None if paper_labelled else "paper")
            paper_labelled = True
        if s.get("paper_line") is not None:
            ax.hlines(s["paper_line"], -0.45, len(columns) - 0.55, colors=colour, linestyles="--", lw=1,
                      label=f"paper, {s['label']}" if len(series) > 1 else "paper (mean)")
            low.append(s["paper_line"])
            if s.get("ours_line") is not None:
                ax.hlines(s["ours_line"], -0.45, len(columns) - 0.55, colors=colour, linestyles="-", lw=0.8,
                          alpha=0.7, label=f"ours, {s['label']} (mean)" if len(series) > 1 else "ours (mean)")
        low += list((ours - np.nan_to_num(spread))[np.isfinite(ours)]) + list(paper[np.isfinite(paper)])
    ax.set_xticks(x, [str(c) for c in columns], rotation=45 if len(columns) > 10 else 0,
                  ha="right" if len(columns) > 10 else "center")
    ax.set_xlim(-0.6, len(columns) - 0.4)
    if bounded:
        ax.set_ylim(max(0.0, math.floor(min(low, default=0.0) * 20) / 20 - 0.05), 1.01)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(axis="x", visible=False)
    ax.legend(loc="best", fontsize=6.5)
    return save(fig, path)


def plot_vs_setting(x: Sequence[float], ours: Sequence[float | None], spread: Sequence[float | None],
                    paper: Sequence[float | None], path: str | Path, title: str = "", ylabel: str = "",
                    xlabel: str = "", bounded: bool = True, percent: bool = False,
                    apart: Sequence[str | None] | None = None) -> Path:
    """Ours against the paper over the setting a table's rows vary (the outlier share, the objects
    drawn, the training size), as the papers draw it: our mean over the classes as a line with a
    band of ± the spread over folds / seeds / draws, the paper's numbers as a dashed black line.
    `percent`: x is a share, shown in %. `apart`: per point, a note where ours is not the paper's
    mean ("1 of 10 classes"): such a point is drawn off the line, hollow, with its note."""
    def arr(values: Iterable[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)

    xs = arr(x) * (100 if percent else 1)
    ours_, spread_, paper_ = arr(ours), arr(spread), arr(paper)
    notes = list(apart or [None] * len(xs))
    off = np.array([bool(n) for n in notes])
    on_line = np.where(off, np.nan, ours_)
    fig, (ax,) = figure(size=(4.6, 3.4))
    ax.plot(xs, on_line, "o-", color="C0", lw=1.5, ms=4,
            label="ours (mean)" if np.isfinite(spread_).any() else "ours (mean; one run per cell: no spread)")
    if off.any():
        ax.plot(xs[off], ours_[off], "o", mfc="none", color="C0", ms=6, label="ours over part of the classes (no Δ)")
        for xv, yv, note in zip(xs[off], ours_[off], [n for n in notes if n]):
            ax.annotate(note, (xv, yv), textcoords="offset points", xytext=(0, -11), ha="center", fontsize=6,
                        color="C0")
        spread_ = np.where(off, np.nan, spread_)  # no band for a point that is not the table's
    if np.isfinite(spread_).any():
        band = np.nan_to_num(spread_)
        ax.fill_between(xs, ours_ - band, ours_ + band, color="C0", alpha=0.2, lw=0,
                        label="± std over folds / seeds / draws")
    if np.isfinite(paper_).any():
        ax.plot(xs, paper_, "s--", color=PAPER_COLOUR, lw=1.2, ms=3.5, label="paper")
    ax.set_xticks(xs, [f"{v:g}" for v in xs])
    if bounded:
        finite = np.concatenate([ours_ - np.nan_to_num(spread_), paper_])
        finite = finite[np.isfinite(finite)]
        ax.set_ylim(max(0.0, math.floor(min(finite, default=0.0) * 20) / 20 - 0.05), 1.01)
    ax.set(xlabel=xlabel + (" (%)" if percent else ""), ylabel=ylabel, title=title)
    ax.legend(loc="best", fontsize=7)
    return save(fig, path)

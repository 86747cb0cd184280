"""A benchmark leaderboard's figures: the critical-difference diagram (autorank's) and the metric
against each method's training FLOPs."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

from anomaly.report.leaderboard import ALPHA, TUNED_MARK, Leaderboard


def plot_cost(board: Leaderboard, out_dir: Path) -> Path | None:
    """The figure of what each method bought with its compute: its mean metric over the ranked
    classes against its mean training FLOPs per run (log axis), one labelled point per method
    (hollow: tuned on labelled anomalies); None where no run recorded its cost."""
    points = [(m, board.costs[m][0], board.mean(m)) for m in board.methods
              if (board.costs.get(m) or (None,))[0] and board.mean(m) is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anomaly.report.plots import slug
    from anomaly.report.render import metric_title

    fig, axis = plt.subplots(figsize=(6.4, 4.2))
    label_at = label_heights(points)
    for method, flops, mean in points:
        tuned = method in board.tuned
        axis.scatter([flops], [mean], s=36, facecolors="none" if tuned else "C0", edgecolors="C0", zorder=3)
        axis.annotate(METHOD_TITLES.get(method, method) + (f" {TUNED_MARK}" if tuned else ""), (flops, mean),
                      xytext=(flops * 1.12, label_at[method]), fontsize=8, va="bottom")
    low = min([*label_at.values(), *(mean for _, _, mean in points)])
    high = max(mean for _, _, mean in points)
    axis.set_ylim(low - 0.04 * (high - low or 1), high + 0.06 * (high - low or 1))
    if board.budget_flops:
        axis.axvline(board.budget_flops, color="grey", lw=0.8, ls="--", zorder=1)
        axis.annotate("the budget", (board.budget_flops, axis.get_ylim()[1]), textcoords="offset points",
                      xytext=(-3, -3), ha="right", va="top", fontsize=7, color="grey")
    axis.set_xscale("log")
    axis.set_xlabel("training FLOPs per run (mean over its runs)")
    axis.set_ylabel(f"mean test {metric_title(board.metric)} over {len(board.complete)} classes")
    axis.grid(True, which="major", alpha=0.3)
    note = f" (hollow {TUNED_MARK}: tuned on labelled anomalies)" if board.tuned else ""
    axis.set_title(f"{board.table} · budget {board.budget}: what each method bought with its compute{note}",
                   fontsize=8)
    path = out_dir / f"{slug(board.title)}_flops.png"
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def label_heights(points: list[tuple[str, float, float]], gap: float = 0.045) -> dict[str, float]:
    """Where each point's label sits (data units): at its point, moved down where a label of a
    point at about the same FLOPs (within a factor 2) would overlap it (`gap`: a label's height
    as a share of the range of the means)."""
    means = [mean for _, _, mean in points]
    step = gap * ((max(means) - min(means)) or 1.0)
    placed: list[tuple[float, float]] = []  # (log10 FLOPs, label height)
    heights = {}
    for method, flops, mean in sorted(points, key=lambda p: -p[2]):
        x, y = math.log10(flops), mean
        for other_x, other_y in sorted(placed, key=lambda p: -p[1]):
            if abs(other_x - x) < math.log10(2) and abs(other_y - y) < step:
                y = other_y - step
        placed.append((x, y))
        heights[method] = y
    return heights


# the methods as their papers name them (the diagram's labels; tables keep the config ids)
METHOD_TITLES = {"ae": "AE", "adae": "ADAE", "anogan": "AnoGAN", "arae": "ARAE", "deep_svdd": "Deep SVDD",
                 "fanogan": "f-AnoGAN", "geom": "GEOM", "gpnd": "GPND", "ocsvm": "OC-SVM", "ocsvm_tuned": "OC-SVM tuned",
                 "vae": "VAE"}


def cd_labels(board: Leaderboard) -> dict[str, str]:
    """Each method of the diagram by its name and its average rank, as the leaderboard gives them."""
    return {m: f"{METHOD_TITLES.get(m, m)} ({board.ranks[m]:.1f})" for m in board.ranks}


def cd_title(board: Leaderboard) -> str:
    """What the diagram ranks: the table and budget, the metric, the blocks (classes × seeds), the
    Friedman p and the Nemenyi CD."""
    from anomaly.report.render import metric_title

    seeds = board.seeds()
    return (f"{board.table} · budget {board.budget}: average rank of test {metric_title(board.metric)}\n"
            f"over {board.test.n_classes} classes × {seeds} seed{'s' if seeds != 1 else ''}; Friedman "
            f"p = {board.test.pvalue:.1g}; bars join methods within the Nemenyi CD = {board.test.cd:.2f} "
            f"(α = {ALPHA})")


def plot_cd(board: Leaderboard, out_dir: Path) -> Path | None:
    """The critical-difference diagram (autorank's), or None without a test."""
    if board.test is None or board.test.result is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from autorank import plot_stats

    from anomaly.report.plots import slug

    result = board.test.result
    result = result._replace(rankdf=result.rankdf.rename(index=cd_labels(board)))
    with contextlib.redirect_stdout(io.StringIO()):
        axis = plot_stats(result, allow_insignificant=True)
    axis.set_title(cd_title(board), fontsize=9)
    path = out_dir / f"{slug(board.title)}_cd.png"
    axis.figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(axis.figure)
    return path

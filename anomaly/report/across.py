"""Methods compared across datasets, the datasets as the blocks (beside each benchmark's own
Friedman / Nemenyi test over its classes).

The classes of one dataset share its test set, so they are not the independent blocks the rank
test assumes (Demšar 2006); datasets are. Per budget, every benchmark leaderboard at it is one
block: each ranked method's mean over its classes there. Each pair of methods is compared by the
Wilcoxon signed-rank test over the datasets (exact, two-sided), the p-values Holm-corrected over
all pairs (Benavoli et al., JMLR 2017, argue for signed-rank comparisons across data sets).

With n datasets the smallest p-value the exact two-sided signed-rank test can give is 2 / 2ⁿ
(every difference the same sign): with 2 datasets 0.5, so no pair can differ at α = 0.05 however
large its differences; that is said instead of p-values that cannot be small, with the fewest
datasets that could decide (Holm's first step multiplies the smallest p by the number of pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Sequence

import numpy as np
from scipy.stats import rankdata, wilcoxon

ALPHA = 0.05


@dataclass
class PairTest:
    a: str
    b: str
    wins: int            # datasets where a's mean is above b's
    losses: int
    pvalue: float        # exact two-sided signed-rank
    holm: float          # Holm-adjusted over all pairs


@dataclass
class AcrossDatasets:
    budget: str | None
    metric: str
    datasets: list[str]                      # the benchmark tables, one block each
    methods: list[str]                       # best average rank first
    means: dict[str, dict[str, float]]       # method → dataset → its mean over the dataset's classes
    ranks: dict[str, float]                  # average rank over the datasets (1 = best)
    pairs: list[PairTest] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # methods without a mean on every dataset, or tuned

    @property
    def smallest_p(self) -> float:
        """The smallest p-value the exact two-sided signed-rank test can give over these blocks."""
        return 2.0 / 2 ** len(self.datasets)

    @property
    def decidable(self) -> bool:
        return self.smallest_p * max(len(self.pairs), 1) <= ALPHA

    def datasets_needed(self) -> int:
        """The fewest datasets with which Holm's first step can reject at α (all pairs tested)."""
        pairs = max(len(self.pairs), 1)
        return max(1, math.ceil(math.log2(2 * pairs / ALPHA)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (monotone, capped at 1), in the input's order."""
    order = np.argsort(pvalues, kind="stable")
    adjusted, running = [0.0] * len(pvalues), 0.0
    for step, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - step) * float(pvalues[index])))
        adjusted[index] = running
    return adjusted


def signed_rank_p(differences: Sequence[float]) -> float:
    """Exact two-sided Wilcoxon signed-rank p over the non-zero differences (1.0: none)."""
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    return float(wilcoxon(nonzero, alternative="two-sided", method="exact").pvalue)


def compare(means: dict[str, dict[str, float]], datasets: list[str], metric: str = "auroc",
            budget: str | None = None, left_out: Sequence[str] = ()) -> AcrossDatasets:
    """The comparison of methods given each one's mean per dataset (higher = better)."""
    methods = sorted(means)
    matrix = np.array([[means[m][d] for m in methods] for d in datasets])
    ranks = dict(zip(methods, np.vstack([rankdata(-row) for row in matrix]).mean(0).tolist()))
    methods.sort(key=lambda m: (ranks[m], m))
    pairs = []
    for a, b in combinations(methods, 2):
        diff = [means[a][d] - means[b][d] for d in datasets]
        pairs.append(PairTest(a, b, sum(x > 0 for x in diff), sum(x < 0 for x in diff), signed_rank_p(diff), 1.0))
    for pair, adjusted in zip(pairs, holm([p.pvalue for p in pairs])):
        pair.holm = adjusted
    return AcrossDatasets(budget, metric, list(datasets), methods, means, ranks, pairs, list(left_out))


def across_boards(boards: Sequence) -> list[AcrossDatasets]:
    """One comparison per budget that two or more benchmark leaderboards share (their ranked
    methods with a mean on every one of them)."""
    by_budget: dict[str | None, list] = {}
    for board in boards:
        by_budget.setdefault(board.budget, []).append(board)
    out = []
    for budget, group in by_budget.items():
        if len(group) < 2:
            continue
        everywhere = set.intersection(*(set(b.ranked) for b in group))
        common = sorted(m for m in everywhere if all(b.mean(m) is not None for b in group))
        left = sorted(set().union(*(set(b.methods) for b in group)) - set(common))
        if len(common) < 2:
            continue
        means = {m: {b.table: float(b.mean(m)) for b in group} for m in common}
        out.append(compare(means, [b.table for b in group], group[0].metric, budget, left))
    return out


def verdict(result: AcrossDatasets) -> str:
    """What the comparison can say, in words."""
    n, pairs = len(result.datasets), len(result.pairs)
    if not result.decidable:
        return (f"Too few datasets to decide: with {n} datasets as the blocks, the smallest two-sided p-value a "
                f"signed-rank test can reach is 2/2^{n} = {result.smallest_p:.3g}"
                + (f", and Holm over the {pairs} pairs multiplies it by {pairs}" if pairs > 1 else "")
                + f", so no pair of methods can differ significantly at α = {ALPHA} however large its differences "
                f"(it takes at least {result.datasets_needed()} datasets). No p-values are shown; the means and "
                "average ranks above are descriptive only.")
    significant = [p for p in result.pairs if p.holm <= ALPHA]
    if not significant:
        return (f"Wilcoxon signed-rank tests over {n} datasets, Holm-corrected over {pairs} pairs: no pair of methods "
                f"differs significantly at α = {ALPHA}.")
    shown = "; ".join(f"{p.a if p.wins > p.losses else p.b} above {p.b if p.wins > p.losses else p.a} "
                      f"(p = {p.holm:.2g})" for p in significant)
    return (f"Wilcoxon signed-rank tests over {n} datasets, Holm-corrected over {pairs} pairs: significant at "
            f"α = {ALPHA}: {shown}; every other pair is not distinguishable.")


def as_table(result: AcrossDatasets):
    """The comparison as a report table: per method its mean on each dataset, the mean of those,
    and its average rank over the datasets; notes: the verdict and what was left out."""
    from anomaly.report.render import Table, metric_title

    rows, numbers = [], []
    for m in result.methods:
        values = [result.means[m][d] for d in result.datasets]
        rows.append([m, *(f"{v:.3f}" for v in values), f"{np.mean(values):.3f}", f"{result.ranks[m]:.2f}"])
        numbers.append([*values, float(np.mean(values)), result.ranks[m]])
    notes = [f"Each method's mean test {metric_title(result.metric)} over a dataset's classes; datasets are the "
             "blocks (the classes of one dataset share its test set, so they are not independent blocks); "
             "average rank over the datasets (1 = best).", "", verdict(result)]
    if result.left_out:
        notes += ["", f"Left out (tuned on labelled anomalies, or without a mean on every dataset): "
                      f"{', '.join(result.left_out)}."]
    title = f"Across datasets · budget {result.budget}" if result.budget else "Across datasets"
    return Table(title, ["method", *result.datasets, "mean", "avg rank"], rows, numbers, notes)

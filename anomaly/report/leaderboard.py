"""The leaderboard of a benchmark table (`variants_from: method`, conf/table/benchmark_*.yaml):
every method's metric per class (mean ± std over seeds), its mean, its average rank over the
classes, a Friedman test over the ranks with the Nemenyi post-hoc test and its critical-difference
diagram (autorank: Demšar 2006's procedure), what each method's training cost (FLOPs per run and
the share of its published schedule: results.json `cost`, anomaly.cost) with a figure of the
metric against the FLOPs, and the field's published means beside ours. A suspect number
(`anomaly.report.suspect`) still ranks; its cell is marked and named under the table.

Ranks and the test use the classes every ranked method has a number for (a complete block
design); a class some method lacks is shown but left out of them, and said so. A method that
chose something with labelled validation anomalies (`ocsvm_tuned`: results.json
`labelled_selection`) is shown apart, marked, and left out of the ranks and the test: the others
see no labelled anomaly. Datasets as blocks: `anomaly.report.across`.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from anomaly.report.group import CELL_CLASS, CELL_SWEPT, ordered_columns
from anomaly.report.labels import schedule_span, setting_text
from anomaly.report.layout import PaperTable, paper_tables
from anomaly.report.load import Run, hashable
from anomaly.report.statistics import Cell
from anomaly.report.table_conf import table_config
from anomaly.report.suspect import legend, marked

ALPHA = 0.05
START = "<!-- leaderboard:start -->"
END = "<!-- leaderboard:end -->"
# the critical-difference diagrams of the README's section, beside the README
FIGURES = Path("docs") / "leaderboard"


@dataclass
class RankTest:
    """Friedman over the methods' per-class ranks, then Nemenyi: two methods differ significantly
    when their average ranks differ by more than `cd`."""
    statistic: float
    pvalue: float
    cd: float
    n_classes: int
    result: object = field(repr=False, default=None)  # autorank's RankResult (for the diagram)

    @property
    def significant(self) -> bool:
        return self.pvalue < ALPHA


@dataclass
class Leaderboard:
    table: str
    budget: str | None
    metric: str
    methods: list[str]            # best average rank first
    classes: list[str]
    cells: dict[str, dict[str, Cell]]  # method → class → the seeds' values
    ranks: dict[str, float]       # average rank over the complete classes (1 = best)
    complete: list[str]           # the classes every method has a number for
    test: RankTest | None
    why_no_test: str | None
    field_means: list[dict]
    flags: tuple[str, ...] = ()
    # per method, the epochs it trained against its paper's schedule ("2/80 ep"; "47–61/1600 ep"; "mixed")
    schedules: dict[str, str] = field(default_factory=dict)
    # the methods that chose with labelled anomalies → what they chose (apart: not ranked, not tested)
    tuned: dict[str, str] = field(default_factory=dict)
    # per method, its runs' mean training FLOPs and mean share of the published schedule (None: not recorded)
    costs: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    budget_flops: float | None = None  # a compute budget's training FLOPs, where the runs had one
    data: str | None = None  # what the runs trained, validated and tested on (`data_text`)

    @property
    def ranked(self) -> list[str]:
        """The methods in the ranks and the test, best first (the tuned ones are not)."""
        return [m for m in self.methods if m not in self.tuned]

    @property
    def title(self) -> str:
        return " · ".join([self.table, f"budget {self.budget}" if self.budget else "no budget", *self.flags])

    def mean(self, method: str) -> float | None:
        """The mean over the complete classes of the method's class means."""
        values = [self.cells[method][c].mean for c in self.complete]
        return float(np.mean(values)) if values and None not in values else None

    def seeds(self) -> int:
        return max((c.n for per in self.cells.values() for c in per.values()), default=0)

    def significantly_better(self, a: str, b: str) -> bool | None:
        """Whether a's average rank beats b's by more than the critical difference (None: no test)."""
        if self.test is None:
            return None
        return self.test.significant and self.ranks[b] - self.ranks[a] > self.test.cd


def block_of(run: Run) -> str:
    """The class column a run's number ranks in: its class (`run.column`), with any cell key
    beside the method, the class and the repetitions (COIL-100's object count is already in its
    column, `4 drawn`; its draws are averaged like seeds)."""
    cell = (run.reproduce or {}).get("cell") or {}
    others = [setting_text(k, v) for k, v in sorted(cell.items())
              if k not in CELL_SWEPT | CELL_CLASS | {"variant", "protocol.n_normal"}]
    return " · ".join([run.column, *others])


def leaderboard(paper: PaperTable, metric: str) -> Leaderboard:
    """The leaderboard of one benchmark table × budget: a row per variant (method), a column per
    class (`block_of`), each cell the mean over its seeds (and draws); the methods tuned on
    labelled anomalies after the others, outside the ranks and the test."""
    cells: dict[str, dict[str, Cell]] = {}
    runs_of: dict[str, list[Run]] = {}
    for run in paper.runs:
        method = str(((run.reproduce or {}).get("cell") or {}).get("variant", run.method))
        cells.setdefault(method, {}).setdefault(block_of(run), Cell([])).add(run, metric)
        runs_of.setdefault(method, []).append(run)
    schedules = {m: schedule_span(runs) for m, runs in runs_of.items()}
    tuned = {m: next(r.labelled_selection for r in runs if r.labelled_selection)
             for m, runs in runs_of.items() if any(r.labelled_selection for r in runs)}
    classes = ordered_columns(paper.runs, column=block_of)
    ranked = sorted(m for m in cells if m not in tuned)
    complete = [c for c in classes if all(c in cells[m] and cells[m][c].mean is not None for m in ranked)]
    ranks, test, why = {}, None, None
    if complete and ranked:
        matrix = np.array([[cells[m][c].mean for m in ranked] for c in complete])
        ranks = dict(zip(ranked, average_ranks(matrix).tolist()))
        test, why = rank_test(matrix, ranked)
    else:
        why = "no class has a number for every method"
    ranked.sort(key=lambda m: (ranks.get(m, math.inf), m))
    config = table_config(paper.table)
    field_means = [dict(e) for e in config.field_means] if config is not None else []
    return Leaderboard(paper.table, paper.budget, metric, ranked + sorted(tuned), classes, cells, ranks, complete,
                       test, why, field_means, paper.flags, schedules, tuned,
                       {m: run_costs(runs) for m, runs in runs_of.items()},
                       next((r.cost["budget_flops"] for r in paper.runs if r.cost and r.cost.get("budget_flops")), None),
                       data_text(paper.runs))


def data_text(runs: Sequence[Run]) -> str | None:
    """What the runs trained, validated and tested on, from their recorded split sizes: 'Each run
    trained on 820–1,071 images of its class, validated on 501 (452 of them anomalies) and tested
    on 1,000 (902 anomalies) of the 10,000 test images; every method of a class on the same
    images. This copy of the dataset: 10,000 of the official 60,000 training images.' None where
    no run recorded its sizes."""
    from anomaly.provenance import subset_line

    sized = [r for r in runs if r.split_sizes]
    if not sized:
        return None

    def count(key: str) -> str:
        values = sorted({int(r.split_sizes[key]) for r in sized if isinstance(r.split_sizes.get(key), int)})
        return "?" if not values else f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}–{values[-1]:,}"

    def anomalies(split: str, words: str) -> str:  # left out where the runs did not record them
        known = count(f"{split}_anomalies")
        return "" if known == "?" else f" ({known} {words})"

    contaminated = any(r.split_sizes.get("train_anomalies") for r in sized)
    tests = {r.dataset_size.get("test") for r in sized if r.dataset_size}
    of_tests = f" of the {tests.pop():,} test images" if len(tests) == 1 and None not in tests else ""
    text = (f"Each run trained on {count('train')} images of its class"
            + (anomalies("train", "of them anomalies") if contaminated else "")
            + f", validated on {count('val')}{anomalies('val', 'of them anomalies')} and tested on "
              f"{count('test')}{anomalies('test', 'anomalies')}{of_tests}")
    by_class: dict[str, set] = {}
    for run in runs:
        by_class.setdefault(block_of(run), set()).add(hashable(run.data_fingerprint))
    if all(len(prints) == 1 and None not in prints for prints in by_class.values()):
        text += "; every method of a class on the same images (their recorded fingerprints)"
    subsets = sorted({line for line in (subset_line(r.dataset_size) for r in sized) if line})
    return text + "." + (f" This copy of the dataset: {'; '.join(subsets)}." if subsets else "")


def average_ranks(matrix: np.ndarray) -> np.ndarray:
    """Each column's (method's) mean rank over the rows (classes): rank 1 = the highest value in
    a row, ties sharing their average rank."""
    return np.vstack([rankdata(-row) for row in matrix]).mean(0)


def run_costs(runs: Sequence[Run]) -> tuple[float | None, float | None]:
    """(mean training FLOPs, mean share of the published schedule) over the runs that recorded them."""
    flops = [float(r.cost["training_flops"]) for r in runs if r.cost and r.cost.get("training_flops") is not None]
    shares = [float(r.cost["schedule_share"]) for r in runs if r.cost and r.cost.get("schedule_share") is not None]
    return (float(np.mean(flops)) if flops else None, float(np.mean(shares)) if shares else None)


def rank_test(matrix: np.ndarray, methods: Sequence[str]) -> tuple[RankTest | None, str | None]:
    """Friedman + Nemenyi over a classes × methods matrix (higher = better), by autorank."""
    n_classes, n_methods = matrix.shape
    if n_methods < 3 or n_classes < 5:  # autorank's own minimum of 5 (its rows)
        return None, (f"the Friedman test here needs at least 3 methods and 5 classes with a number for every "
                      f"method (here {n_methods} and {n_classes})")
    import pandas as pd
    from autorank import autorank

    frame = pd.DataFrame(matrix, columns=list(methods))
    with contextlib.redirect_stdout(io.StringIO()):  # autorank prints its choice of test
        result = autorank(frame, alpha=ALPHA, verbose=False, order="descending", force_mode="nonparametric")
    # autorank's Friedman statistic is not in its result: scipy's, the same test
    from scipy.stats import friedmanchisquare

    statistic = float(friedmanchisquare(*matrix.T).statistic)
    return RankTest(statistic, float(result.pvalue), float(result.cd), n_classes, result), None


def leaderboards(runs: Sequence[Run], metric: str | None = None) -> list[Leaderboard]:
    """One leaderboard per benchmark table × budget among the runs (in the table's own metric),
    budget=compute's first (`BUDGET_ROLES`)."""
    boards = []
    for paper in paper_tables(runs):
        config = table_config(paper.table)
        if config is None or config.variants_from is None:
            continue
        boards.append(leaderboard(paper, metric or config.metric))
    return sorted(boards, key=lambda board: (budget_order(board.budget), board.table))


def is_benchmark(table: str) -> bool:
    config = table_config(table)
    return config is not None and config.variants_from is not None


# ---- rendering -----------------------------------------------------------------------------------
TUNED_MARK = "†"


def as_table(board: Leaderboard, bold: tuple[str, str] = ("**", "**")):
    """The leaderboard as a report table (`anomaly.report.render.Table`): a row per method (best
    rank first; the methods tuned on labelled anomalies last, marked †, unranked), a column per
    class with the best ranked method of each class in `bold`, its mean, average rank, schedule,
    training FLOPs and share of its published schedule; its notes say what the cells are, the
    test's result, what the tuned rows chose, and the field's means."""
    from anomaly.report.render import Table, metric_title

    best = {c: max((board.cells[m][c].mean for m in board.ranked
                    if c in board.cells[m] and board.cells[m][c].mean is not None), default=None)
            for c in board.classes}
    rows, numbers = [], []
    for method in board.methods:
        row, values = [method + (f" {TUNED_MARK}" if method in board.tuned else "")], []
        for c in board.classes:
            cell = board.cells[method].get(c)
            values.append(None if cell is None else cell.mean)
            if cell is None or cell.mean is None:
                row.append("failed" if cell is not None and cell.failed else "—")
                continue
            text = f"{cell.mean:.3f}" + (f" ± {cell.std:.3f}" if cell.std is not None else "")
            strong = cell.mean == best[c] and method not in board.tuned
            row.append(marked(f"{bold[0]}{text}{bold[1]}" if strong else text, cell.suspect))
        mean = board.mean(method)
        flops, share = board.costs.get(method, (None, None))
        row += ["—" if mean is None else f"{mean:.3f}",
                f"{board.ranks[method]:.2f}" if method in board.ranks else "—",
                board.schedules.get(method, "?"), flops_text(flops), share_text(share)]
        rows.append(row)
        numbers.append(values + [mean, board.ranks.get(method), None, flops, share])
    seeds = board.seeds()
    over = (f"the {len(board.complete)} classes every method has" if len(board.complete) < len(board.classes)
            else "the classes")
    limits = f" {board.data}" if board.data else ""
    notes = [f"{metric_title(board.metric)} per class: mean" + (f" ± std over {seeds} seeds" if seeds > 1
                                                                 else " (one seed)")
             + f"; bold: the best of the class; mean and average rank (1 = best) over {over}.{limits}",
             "", significance_line(board)]
    if board.tuned:
        notes += ["", tuned_line(board)]
    if any(f is not None for f, _ in board.costs.values()):
        notes += ["", cost_line(board)]
    if board.field_means:
        notes += ["", field_line(board)]
    flagged = legend((m, c, board.cells[m][c].suspect) for m in board.methods for c in board.classes
                     if c in board.cells[m])
    notes += [""] + flagged if flagged else []
    return Table(f"Leaderboard: {board.title}", ["method", *board.classes, "mean", "avg rank", "epochs",
                                                 "train FLOPs", "share"], rows, numbers, notes)


def flops_text(flops: float | None) -> str:
    """2.0e13 (a run's training FLOPs, two digits)."""
    if flops is None:
        return "—"
    if flops <= 0:
        return "0"
    mantissa, exponent = f"{flops:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def share_text(share: float | None) -> str:
    if share is None:
        return "—"
    return "<1 %" if 0 < share < 0.005 else f"{100 * share:.0f} %"


def tuned_line(board: Leaderboard) -> str:
    chosen = "; ".join(f"{m}: {what}" for m, what in board.tuned.items())
    return (f"{TUNED_MARK} tuned on labelled anomalies ({chosen}): shown apart, not ranked, not bold, and left out "
            "of the Friedman / Nemenyi test, whose methods choose nothing with a labelled anomaly.")


def cost_line(board: Leaderboard) -> str:
    budget = board.budget_flops
    line = ("train FLOPs: training FLOPs of a run, mean over the method's runs (torch's FlopCounterMode on its "
            "own training step: matrix products and convolutions, forward and backward, every network it "
            "updates, its attacks and searches; the OC-SVM's libsvm fit estimated); share: of the FLOPs of its "
            "published schedule (conf/paper/, else the schedule its config sets).")
    if budget:
        line += (f" Every method trained to the same {flops_text(budget)} training FLOPs or to the end of its "
                 "schedule, whichever came first, its stages and lr milestones shortened in proportion.")
    return line


def print_leaderboard(board: Leaderboard, width: int | None = None) -> None:
    """The leaderboard on the terminal: the mean and the average rank first, then the class means
    (`.995`: the spread is in the report), the best of each class in bold; classes that do not fit
    the window (Fashion-MNIST's names) continue in a further block, with the methods again."""
    from anomaly.report.render import Table, print_table

    table = as_table(board)
    rows, bold = [], []
    n = len(board.classes)
    ranked = [board.cells[m] for m in board.ranked]
    for method, numbers, label in zip(board.methods, table.numbers, (r[0] for r in table.rows)):
        per_class, mean, rank, flops = numbers[:n], numbers[n], numbers[n + 1], numbers[n + 3]
        best = [method not in board.tuned and v is not None and v == max(
            (cells[c].mean for cells in ranked if c in cells and cells[c].mean is not None), default=None)
            for v, c in zip(per_class, board.classes)]
        flagged = [board.cells[method][c].suspect if c in board.cells[method] else [] for c in board.classes]
        rows.append([label, "—" if mean is None else f"{mean:.3f}".removeprefix("0"),
                     "—" if rank is None else f"{rank:.1f}", board.schedules.get(method, "?"), flops_text(flops),
                     *[("—" if v is None else marked(f"{v:.3f}".removeprefix("0"), runs))
                       for v, runs in zip(per_class, flagged)]])
        bold.append([False] * 5 + best)
    view = Table(f"Leaderboard: {board.title}", ["method", "mean", "rank", "epochs", "FLOPs", *board.classes], rows,
                 [], table.notes)
    print_table(view, width, gap=1, strong=bold)


def significance_line(board: Leaderboard) -> str:
    if board.test is None:
        return f"No rank test: {board.why_no_test}."
    t = board.test
    ranked = board.ranked
    verdict = ("the methods' ranks differ significantly" if t.significant
               else "no significant difference among the ranks")
    line = (f"Friedman test over {t.n_classes} classes × {len(ranked)} methods: χ² = {t.statistic:.1f}, "
            f"p = {t.pvalue:.2g} ({verdict} at α = {ALPHA}); Nemenyi critical difference {t.cd:.2f} ranks.")
    if board.tuned:
        line += f" Not in the test: {', '.join(board.tuned)} ({TUNED_MARK})."
    if t.significant and len(ranked) > 1:
        top = ranked[0]
        beaten = [m for m in ranked[1:] if board.significantly_better(top, m)]
        tied = [m for m in ranked[1:] if m not in beaten]
        line += (f" {top} ranks significantly above {', '.join(beaten) if beaten else 'none'}"
                 + (f"; not distinguishable from {', '.join(tied)}." if tied else "."))
    return line


def field_line(board: Leaderboard) -> str:
    parts = []
    for entry in board.field_means:
        ours = board.mean(entry["variant"]) if entry.get("variant") in board.cells else None
        text = f"{entry['method']} {float(entry[board.metric]):.3f} ({entry['source']}"
        parts.append(text + (f"; ours here: {ours:.3f})" if ours is not None else ")"))
    return "Published means on this protocol (full budgets, not run here unless `ours` says so): " + "; ".join(parts) + "."


# the README's order of the budgets, and what each one's leaderboards are (a budget not named here
# comes after these, by name, without a line of its own)
BUDGET_ROLES = {
    "compute": "equal training compute, the comparison: every method trained to the same training FLOPs, or to "
               "the end of its published schedule where that costs less",
    "paper": "each method's published schedule",
    "equal_steps": "the same number of training batches for every method: batches, not work (GPND makes 4 updates "
                   "a batch, ARAE 40 PGD steps)",
    "reduced": "a first look, not a comparison: a few epochs each, whose training differs a hundredfold between "
               "methods; neither equal compute nor the papers' schedules",
}


def budget_order(budget: str | None) -> tuple[int, str]:
    order = list(BUDGET_ROLES)
    return (order.index(budget), "") if budget in order else (len(order), str(budget))


def readme_section(boards: Sequence[Leaderboard], command: str, figure_dir: Path, readme_dir: Path) -> str:
    """The Markdown between the README's leaderboard markers, one part per budget (budget=compute,
    the comparison, first; each headed by what its numbers are): per benchmark table the
    leaderboard, its notes, its critical-difference diagram and its figure of the metric against
    the training FLOPs (written to figure_dir) and the command that runs it again; then, where
    several benchmarks share the budget, the comparison across datasets (anomaly.report.across)."""
    from anomaly.report.across import across_boards, as_table as across_table
    from anomaly.report.leaderboard_figures import plot_cd, plot_cost
    from anomaly.report.render import markdown as table_markdown

    parts = [f"<!-- written by `{command}` from the results files: edit those, not this section -->", ""]
    figure_dir.mkdir(parents=True, exist_ok=True)
    budgets = sorted({board.budget for board in boards}, key=budget_order)
    for budget in budgets:
        group = [board for board in boards if board.budget == budget]
        role = BUDGET_ROLES.get(budget)
        parts += [f"### budget={budget}" + (f": {role}" if role else ""), ""]
        for board in group:
            table = as_table(board)
            parts += [f"#### {board.title}", ""]
            parts += table_markdown(table).split("\n", 2)[2].rstrip("\n").split("\n")
            figure = plot_cd(board, figure_dir)
            if figure is not None:
                parts += ["", f"![critical-difference diagram of {board.title}]({figure.relative_to(readme_dir)})"]
            figure = plot_cost(board, figure_dir)
            if figure is not None:
                parts += ["", f"![{board.title}: mean AUROC against training FLOPs]({figure.relative_to(readme_dir)})"]
            rerun = f"python -m anomaly.reproduce table={board.table} budget={board.budget}"
            parts += ["", f"Re-run: `{rerun}` (one method: `variant=<name>`; kept cells are skipped).", ""]
        for result in across_boards(group):
            table = across_table(result)
            parts += [f"#### {table.title}", ""] + table_markdown(table).split("\n", 2)[2].rstrip("\n").split("\n") + [""]
    return "\n".join(parts).rstrip("\n")

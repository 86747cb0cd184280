"""`python -m anomaly.report <run or multirun dirs…>`: paper-style tables and plots from results.json.

Every `results.json` below the given dirs is one run. A table per dataset × protocol (× differing
protocol settings); rows: the methods, split further by every setting of the run config that
differs among them other than the seeds, fold, draw and classes (`method.attack`,
`trainer.max_epochs`, the budget…: the row label names it); columns: the classes (the normal class(es), or `¬k` where the protocol was given
the anomalous class). A cell is the mean over the runs that differ only in seed, fold or draw;
`mean` is the mean of the class cells and `± std` the standard deviation over all of the row's
runs. Only ok runs make the tables: failed, interrupted and invalid ones are listed after them
(`selection`). A run config re-run or re-scored counts once (its newest result). Smoke / debug
runs and re-scores are left out (one line says how many) unless `--include-debug` /
`--include-rescores`. A suspect number (AUROC below chance…) stays in its cell, marked `!`, and is
named under its table (`suspect`).

Runs of `python -m anomaly.reproduce` (with `reproduce.paper`) get tables of ours | paper | Δ
per cell and per row mean ("below": ours lower than the paper by more than our std), and a
figure each. `--readme README.md` instead rewrites the README's section between
`<!-- reproduction:start -->` and `<!-- reproduction:end -->` with those tables.

Writes into `--out` (default `<first dir>/report`): `report.md`, one long-format CSV per metric
(`auroc.csv`, `f1.csv`), `paper.csv` (ours vs paper, long format), `runs.csv` (one line per run) and `plots/`.

Stages: `load` (results.json → runs; debug and re-score runs left out), `group` (rows, columns
and cells: a reproduced table's keys from its conf/table config, else inferred from the settings
that differ), `statistics` (cell means, spreads, ours vs the paper), `layout` (a reproduced table's
rows × columns). Then `render` (Markdown, CSV, rich, README), `plots`, `leaderboard` (benchmark
tables), `across`, `summary`, `cli`; `selection` and `suspect` say which runs count and which
numbers are marked; `labels`, `metrics` and `table_conf` hold the text, the metric names and the
table configs as read now.
"""

from anomaly.report.cli import main, readme, report
from anomaly.report.layout import paper_tables
from anomaly.report.load import ReportError, Run, load_runs, select_runs
from anomaly.report.render import Table
from anomaly.report.statistics import Cell

__all__ = ["Cell", "ReportError", "Run", "Table", "load_runs", "main", "paper_tables", "readme", "report",
           "select_runs"]

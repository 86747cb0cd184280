"""The report's entry points: `report()` (tables, CSVs, plots into a report dir), `readme()` (the
README's reproduction section) and `main()` (`python -m anomaly.report`). Every argument is
checked, and every results file read, before anything is written."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from anomaly.report import across, leaderboard, render
from anomaly.report.group import assign_rows, protocol_groups
from anomaly.report.layout import paper_tables
from anomaly.report.load import LeftOut, ReportError, Run, check_metrics, load_runs, select_runs
from anomaly.report.leaderboard import as_table, is_benchmark, leaderboards, print_leaderboard
from anomaly.report.leaderboard_figures import plot_cd, plot_cost
from anomaly.report.render import MARKS, markdown, metric_title, print_table
from anomaly.report.selection import not_ok_lines, one_per_config, split_ok

DEFAULT_METRICS = ("auroc", "f1_paper")


def _gather(dirs: Sequence[str | Path], metrics: Sequence[str], include_debug: bool,
            include_rescores: bool, reproduced_only: bool = False) -> tuple[list[Run], LeftOut]:
    """Read and select the runs (only those of reproduced tables: `reproduced_only`), checking
    the metrics; nothing is written. The tables get ok runs only, each run config once."""
    if not dirs:
        raise ReportError("no run or sweep dir given")
    found = [r for r in load_runs(dirs) if r.reproduce or not reproduced_only]
    check_metrics(metrics, found)  # the known metrics and any the runs recorded
    if not found:
        raise ReportError(f"no results.json below {', '.join(map(str, dirs))}"
                          + (" of a reproduced table (python -m anomaly.reproduce)" if reproduced_only else ""))
    from anomaly.report.stale import mark_stale

    mark_stale(found)  # a kept cell whose command now makes another config: marked, not hidden
    runs, left_out = select_runs(found, include_debug, include_rescores)
    runs, left_out.not_ok = split_ok(runs)
    runs, left_out.repeats = one_per_config(runs)
    if not runs:
        raise ReportError(f"no runs to report below {', '.join(map(str, dirs))}: every one was left out. "
                          + "\n".join([left_out.line(), *not_ok_lines(left_out.not_ok)]))
    assign_rows(runs)
    return runs, left_out


def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir}: exists and is not a directory")


def report(dirs: Sequence[str | Path], out: str | Path | None = None, compare: bool = False,
           metrics: Sequence[str] = DEFAULT_METRICS, plots: bool = True, echo: bool = True,
           include_debug: bool = False, include_rescores: bool = False, full: bool = False) -> dict[str, Any]:
    """Build the report (on the terminal, reproduced tables as one summary line each unless `full`;
    the files always hold every table); returns {"runs", "tables" (per metric, a `Table` per dataset × protocol), "compare" (per metric,
    a list of tables), "paper" (per metric, the ours-vs-paper tables), "left_out", "files",
    "out_dir"}."""
    metrics = list(metrics)
    out_dir = Path(out) if out else Path(dirs[0]) / "report"
    _check_out(out_dir)
    runs, left_out = _gather(dirs, metrics, include_debug, include_rescores)
    reproduced = paper_tables(runs)

    def paper_metrics(table) -> list[str]:
        return [m for m in metrics if table.has_paper(m)]

    out_dir.mkdir(parents=True, exist_ok=True)
    not_ok = left_out.not_ok
    parts = ["# anomaly report", "",
             f"{len(runs) + len(not_ok)} runs ({len(runs)} ok, {len(not_ok)} not ok) from "
             + ", ".join(f"`{d}`" for d in dirs) + ".", ""]
    if left_out:
        parts += [left_out.line(), ""]
    parts += ["Cells: mean over seeds / folds / draws (runs whose config differs in nothing else; any "
              "other difference is a row of its own, named in the row label). `mean ± std`: mean of the "
              "class cells ± std over all runs of the row. `*`: some classes missing or failed (not "
              "averaged in). `¬k`: class k was the anomaly.", ""]
    tables: dict[str, list[render.Table]] = {}
    compared: dict[str, list[render.Table]] = {}
    versus: dict[str, list[render.Table]] = {}
    files: list[Path] = []
    # short: on the terminal, a reproduced table's class and paper tables give way to its summary line
    short = echo and not full and bool(reproduced)
    of_table = [any(k == "table" for k, _ in group[2]) for group, _ in protocol_groups(runs)]
    for metric in metrics:
        tables[metric] = render.class_tables(runs, metric)
        parts += [markdown(t) for t in tables[metric]]
        files.append(render.write_csv(tables[metric], out_dir / f"{'f1' if metric == 'f1_paper' else metric}.csv"))
        if echo:
            for t, reproduced_group in zip(tables[metric], of_table):
                if not (short and reproduced_group):
                    print_table(t)
        if compare:
            compared[metric] = render.compare_tables(runs, metric)
            parts += ["## " + metric_title(metric) + " side by side", ""] + [markdown(t) + "\n" for t in compared[metric]]
            if echo:
                for t in compared[metric]:
                    print_table(t)
    shown = [t for t in reproduced if paper_metrics(t)]
    boards = leaderboards(runs)  # budget=compute's first
    # short: on the terminal, only the first budget's leaderboards (the comparison); the others named
    headline = boards[0].budget if boards else None
    elsewhere = []
    for board in boards:
        parts += [markdown(as_table(board), level="##"), ""]
        if echo and (not short or board.budget == headline):
            print_leaderboard(board)
        elif echo:
            elsewhere.append(board.title)
    for result in across.across_boards(boards):  # datasets as the blocks
        parts += [markdown(across.as_table(result), level="##"), ""]
        if echo and (not short or result.budget == headline):
            print_table(across.as_table(result))
        elif echo:
            elsewhere.append(across.as_table(result).title)
    if elsewhere:
        from rich.console import Console

        Console().print(f"Also in report.md (or --full): {'; '.join(elsewhere)}.", highlight=False, markup=False)
    if shown:
        parts += ["## Ours vs the paper", "", MARKS, ""]
        for t in shown:
            rendered = render.paper_table(t, paper_metrics(t))
            for metric in paper_metrics(t):
                versus.setdefault(metric, []).append(rendered)
            references = render.references_line(t)
            parts += [markdown(rendered), render.paper_caption(t) + ". " + (f"{references} " if references else "")
                      + render.rerun_line(t), ""]
            if echo and not short:
                print_table(rendered)
                subset = render.data_line(t.runs)
                if subset:  # said beside the ours-vs-paper numbers, not only in NOTES.md
                    print(subset)
        files.append(render.write_paper_csv(shown, paper_metrics, out_dir / "paper.csv"))
    if short:
        from anomaly.report.summary import summary_table

        overview = summary_table(reproduced, paper_metrics)
        subsets = sorted({line for t in reproduced if (line := render.data_line(t.runs))})
        overview.notes += subsets
        print_table(overview, gap=1)
    if not_ok:  # no number to show, and their classes as asked for: apart from the tables
        parts += ["## Not in the tables: runs not ok", ""] + [f"- {line}" for line in not_ok_lines(not_ok)] + [""]
        if echo:
            print(f"Not in the tables: {len(not_ok)} run{'s' if len(not_ok) != 1 else ''} not ok")
            for line in not_ok_lines(not_ok):
                print(f"  {line}")
    if plots:
        from anomaly.report.plots import plot_groups, plot_paper

        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        pngs, not_drawn = plot_groups(runs, plot_dir)
        pngs += plot_paper(shown, paper_metrics, plot_dir)
        pngs += [p for p in (plot_cd(b, plot_dir) for b in boards) if p is not None]
        pngs += [p for p in (plot_cost(b, plot_dir) for b in boards) if p is not None]
        parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in pngs] + [""]
        parts += [f"- {line}" for line in not_drawn] + ([""] if not_drawn else [])
        if echo and not_drawn:
            print(f"{len(not_drawn)} figure groups not drawn (no scores.npz kept): ROC curves and score "
                  "histograms need the run dirs' scores; report.md lists them")
        files += pngs
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(parts))
    runs_path = render.write_runs_csv(runs + not_ok, out_dir / "runs.csv")
    if echo:
        if left_out:
            print(left_out.line())
        print(f"report: {md_path}")
    return {"runs": runs, "tables": tables, "compare": compared, "paper": versus, "left_out": left_out,
            "files": [md_path, runs_path] + files, "out_dir": out_dir}


def readme(dirs: Sequence[str | Path], path: str | Path, include_debug: bool = False,
           include_rescores: bool = False, command: str | None = None, echo: bool = True) -> dict[str, Any]:
    """Rewrite the part of `path` between `<!-- reproduction:start -->` and
    `<!-- reproduction:end -->` from the runs below `dirs` that carry `reproduce`: one table per
    reproduced table and budget; and, where the README has `<!-- leaderboard:start -->` and
    `<!-- leaderboard:end -->`, the benchmark tables' leaderboards there (their diagrams in
    docs/leaderboard/ beside it). Nothing else is written."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"--readme {path}: no such file")
    text = path.read_text()
    if not render.has_markers(text):
        render.raise_missing_markers(str(path))
    runs, left_out = _gather(dirs, (), include_debug, include_rescores, reproduced_only=True)
    # tables without published numbers too: ours alone, the paper "—"; benchmarks as leaderboards
    tables = [t for t in paper_tables(runs) if not is_benchmark(t.table)]
    boards = leaderboards(runs)
    if not tables and not boards:
        raise ReportError(f"no results.json below {', '.join(map(str, dirs))} carries a `reproduce` entry "
                          "with paper numbers (runs of python -m anomaly.reproduce)"
                          + (f". {left_out.line()}" if left_out else ""))
    command = command or shlex.join(["python", "-m", "anomaly.report", *map(str, dirs), "--readme", str(path)])
    new = render.replace_section(text, render.readme_section(tables, command, left_out), str(path))
    if boards:
        markers = (leaderboard.START, leaderboard.END)
        if not render.has_markers(new, markers):
            render.raise_missing_markers(str(path), markers)
        section = leaderboard.readme_section(boards, command, path.parent / leaderboard.FIGURES, path.parent)
        new = render.replace_section(new, section, str(path), markers)
    if new != text:
        path.write_text(new)
    if echo:
        if left_out:
            print(left_out.line())
        print(f"{path}: reproduction section {'rewritten' if new != text else 'unchanged'} "
              f"({len(tables)} table{'s' if len(tables) != 1 else ''})")
    return {"runs": runs, "tables": tables, "left_out": left_out, "changed": new != text}


def main(argv: Sequence[str] | None = None) -> None:
    from anomaly.report import __doc__ as doc

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m anomaly.report", description=doc.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run or multirun dirs (searched for results.json)")
    parser.add_argument("--out", help="report dir (default: <first dir>/report)")
    parser.add_argument("--compare", action="store_true",
                        help="also tables with the methods side by side (rows = classes)")
    parser.add_argument("--metric", action="append", dest="metrics",
                        help="metrics to tabulate (repeatable; default: auroc and f1_paper, the F1 the "
                             "protocol's paper reported): auroc, f1_paper, f1, f1_inlier, aupr_in, aupr_out, "
                             "fpr95, …")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--full", action="store_true",
                        help="every table on the terminal too (by default a reproduced table is one summary "
                             "line there; report.md always holds every table)")
    parser.add_argument("--include-debug", action="store_true",
                        help="also smoke / debug runs (debug=…, fast_dev_run, limit_*_batches), in rows of their own")
    parser.add_argument("--include-rescores", action="store_true",
                        help="also re-scores (python -m anomaly.evaluate), in rows of their own")
    parser.add_argument("--readme", metavar="FILE",
                        help="instead of a report, rewrite FILE's section between <!-- reproduction:start --> and "
                             "<!-- reproduction:end --> (ours vs paper per reproduced table and budget)")
    args = parser.parse_args(argv)
    try:
        if args.readme:
            for given, flag in ((args.out, "--out"), (args.compare, "--compare"), (args.metrics, "--metric"),
                                (args.no_plots, "--no-plots"), (args.full, "--full")):
                if given:
                    raise ReportError(f"{flag} does not apply with --readme (which writes only the README "
                                      "section, with the metrics the paper gives)")
            readme(args.dirs, args.readme, args.include_debug, args.include_rescores,
                   command=shlex.join(["python", "-m", "anomaly.report", *argv]))
        else:
            report(args.dirs, args.out, compare=args.compare, metrics=args.metrics or DEFAULT_METRICS,
                   plots=not args.no_plots, include_debug=args.include_debug,
                   include_rescores=args.include_rescores, full=args.full)
    except ReportError as err:
        print(f"error: {err.message}", file=sys.stderr)
        sys.exit(2)

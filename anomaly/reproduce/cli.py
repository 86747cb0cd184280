"""The reproduce entry point's logic: which cells the command line asks for, running them, and
`--list`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError, RunInterrupted, runlog
from anomaly.config import config_hash
from anomaly.console import user_errors
from anomaly.loggers import has_wandb, log_comparison, table_group
from anomaly.provenance import CONF_DIR
from anomaly.reproduce.fanout import job_slots, progress_line, run_parallel
from anomaly.reproduce.tables import Table, _key, _text
from anomaly.stop_signals import stop_at_once
from anomaly.sweep import configure_job

log = logging.getLogger("anomaly")

# the reproduce app's own keys: never passed on to the cells' run configs
OWN_KEYS = ("table", "budget", "variant", "results_dir", "rerun", "jobs", "jobs_per_gpu")


def split_overrides(table: Table, cfg: DictConfig, task: list[str]) -> tuple[dict, list[str]]:
    """The command line's overrides as (grid restrictions, overrides passed on to every cell).
    A grid key given on the command line restricts the grid to its value; any other key is
    passed on (and beats the budget's value for it)."""
    restrict, passed = {}, []
    for override in task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "variant":
            if cfg.get("variant") is not None:
                restrict["variant"] = cfg.variant
        elif key in table.grid:
            value = OmegaConf.select(cfg, key)
            restrict[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        elif key not in OWN_KEYS and not key.startswith("hydra"):
            passed.append(override)
    return restrict, passed


def run_suffix(table: Table, cell, budget: str, passed: list[str]) -> str:
    """The part of a cell's folder name that says which run settings beside the grid keys the
    command line changed (`-seed1`, `-threshold_quantile`): a run with seed=1 keeps its result
    apart from seed 0's, and no setting outside the grid writes into the grid's own cell folder.
    Settings that do not change the numbers (paths, threads, loggers, the device…: the report's
    ignored keys) and values equal to the table's own are left out. An override that changes
    the run config but names nothing (say, a group option that sets what another key reads) is
    refused: it would otherwise pass for the table's own cell."""
    from hydra import compose
    from omegaconf import open_dict

    from anomaly.report.load import is_ignored

    changed = [o for o in passed if "=" in o and not is_ignored(_key(o))]
    if not changed:
        return ""
    own, given = (compose(config_name="train", overrides=table.overrides(cell, budget, user)) for user in ([], passed))
    for cfg in (own, given):
        with open_dict(cfg):
            cfg.paths.output_dir = "."  # what the hash leaves out anyway
    if config_hash(own) == config_hash(given):
        return ""
    parts = []
    for override in changed:
        key = _key(override)
        value = OmegaConf.select(given, key)
        if value != OmegaConf.select(own, key):
            text = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            if "." in key or key == "seed":
                parts.append(f"{key}{_text(text)}")
            else:  # a config group's option (threshold=quantile): the option's name
                parts.append(f"{key}_{override.split('=', 1)[1]}")
    if not parts:
        from anomaly.provenance import config_differences, result_config

        raise AnomalyError(f"{' '.join(changed)} changes the run config ({'; '.join(config_differences(result_config(own), result_config(given)))}) "
                           "but names no cell folder: give the changed keys themselves on the command line")
    return "".join(f"-{p}" for p in parts).replace("/", "_").replace(" ", "")


def rerun_mode(value) -> bool | str:
    """`rerun`: false (skip kept cells, resume stopped trainings, refuse a kept result of another
    config), true (train and score every cell again), or "stale" (re-make only the cells whose
    kept result is of another config or data: skip the others, resume stopped trainings)."""
    if value in (True, False, "stale"):
        return value
    raise AnomalyError(f"rerun={value}: choose false, true or stale (re-make only the stale cells)")


def check_cells(table: Table, cells: list, budget: str, passed: list[str], run_root: Path) -> None:
    """Every setting of the cells refused before anything trains or is written: the first cell
    of each variant is composed and checked as `anomaly.train` checks its config (the grid's
    other keys change classes, folds and seeds, which the data refuses in its own line)."""
    from anomaly import config_schema
    from anomaly.pipeline import build_threshold
    from anomaly.reproduce.runner import compose_cell

    seen = set()
    for cell in cells:
        if cell.get("variant") in seen:
            continue
        seen.add(cell.get("variant"))
        cfg = compose_cell(table, cell, budget, passed, run_root / cell.slug(), "")
        config_schema.check_train(cfg)
        build_threshold(cfg)


def run(cfg: DictConfig) -> None:
    """The table's cells; SIGTERM or SIGINT stops it with one `error:` line and exit 143 / 130: a
    training at the end of its epoch in progress (with its checkpoint), anything else at once; the
    same command goes on where it stopped."""
    try:
        with stop_at_once():
            run_table(cfg)
    except RunInterrupted as stop:
        runlog.error(str(stop) or f"table stopped by {signal.Signals(stop.signum).name}; the same command goes "
                     "on where it stopped (finished trainings are not trained again)")
        sys.exit(stop.exit_code)


def run_table(cfg: DictConfig) -> None:
    # here, not at the top: `--help`, `--list` and `--cfg job` answer without torch and Lightning
    import torch

    from anomaly.reproduce.runner import one_composition_per_cell, print_comparison, run_group
    from anomaly.results import json_safe, write_json

    with user_errors(discard=Path(cfg.paths.output_dir)), one_composition_per_cell():
        configure_job(cfg)
        hc = HydraConfig.get()
        table = Table.from_config(cfg.table, experiment=hc.runtime.choices.get("experiment"))
        if cfg.budget not in table.budgets:
            raise AnomalyError(f"budget={cfg.budget}: table {table.name} has budgets {list(table.budgets)}")
        restrict, passed = split_overrides(table, cfg, list(hc.overrides.task))
        restrict = {**table.budget_restrictions(cfg.budget), **restrict}
        cells = table.cells(restrict)
        groups = table.groups(cells)
        run_root = Path(cfg.paths.output_dir)
        results_dir = Path(cfg.results_dir) if cfg.get("results_dir") else None
        if results_dir is not None and cfg.budget == "smoke":
            log.info("budget=smoke: results are not kept in %s (smoke runs only check that a table runs)",
                     results_dir)
            results_dir = None
        rerun = rerun_mode(cfg.get("rerun", False))
        suffix = run_suffix(table, cells[0], cfg.budget, passed)
        check_cells(table, cells, cfg.budget, passed, run_root)
        log.info("table %s, budget %s: %d cells from %d trainings (%s)", table.name, cfg.budget, len(cells),
                 len(groups), table.source)
        wants_gpu = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu")) in ("gpu", "cuda")
        slots = job_slots(cfg.get("jobs", 1), cfg.get("jobs_per_gpu", 1), wants_gpu,
                          torch.cuda.device_count() if wants_gpu else 0)
        if len(slots) > 1 and len(groups) > 1:
            results = run_parallel(table, groups, cfg.budget, passed, run_root, results_dir, rerun, slots)
        else:
            from anomaly.reproduce.runner import DataCache

            results, times, data = [], [], DataCache()
            for number, group in enumerate(groups, 1):
                log.info("[%d/%d] training %s → %d cells", number, len(groups),
                         {k: v for k, v in table.training_key(group[0])}, len(group))
                start = time.perf_counter()
                found = run_group(table, group, cfg.budget, passed, run_root, results_dir, rerun=rerun,
                                  suffix=suffix, data=data)
                results += found
                print(progress_line(table, group, found, time.perf_counter() - start, times, number, 0,
                                    len(groups) - number), flush=True)
        run_root.mkdir(parents=True, exist_ok=True)
        write_json(run_root / "cells.json", json_safe(results))  # what a parallel parent reads
        skipped = sum(bool(r.get("skipped")) for r in results)
        if skipped:
            print(f"{skipped} of {len(results)} cells skipped: ok results of the same run config are kept in "
                  f"{results_dir / table.name / cfg.budget} (rerun=true runs them again)")
        if table.variants_from is not None and results_dir is not None:
            print_benchmark(results_dir / table.name / cfg.budget)
        else:
            print_comparison(table, cfg.budget, results)
        if has_wandb(cfg.get("logger")):
            log_table(cfg, table, results, run_root)
        failed = sum(r.get("status") != "ok" for r in results)
        where = f"; kept in {results_dir / table.name / cfg.budget}" if results_dir else ""
        print(f"{len(results) - failed} of {len(results)} cells ok; runs in {run_root}{where}")
        print(f"report: python -m anomaly.report {results_dir / table.name if results_dir else run_root}")
        if failed and hc.mode != RunMode.MULTIRUN:
            sys.exit(1)


def log_table(cfg: DictConfig, table: Table, results: list[dict], run_root: Path) -> None:
    """logger=wandb: the table's ours | paper | Δ per cell and the report's figure of it (ours
    against the paper) in a `comparison` run of the cells' W&B group."""
    from anomaly.reproduce.runner import COMPARISON_COLUMNS, comparison_rows

    images = {}
    try:
        from anomaly.report import report

        out = report([run_root], out=run_root / "report", echo=False, include_debug=True)
        images = {p.stem: p for p in out["files"] if p.suffix == ".png" and (p.name.startswith("paper_")
                                                                         or p.name.endswith("_cd.png"))}
    except SystemExit as err:  # the report found nothing to draw (every cell failed): the table alone
        log.warning("logger=wandb: no figure for the comparison run (%s)", err)
    log_comparison(cfg.logger, table_group(table.name, cfg.budget), COMPARISON_COLUMNS,
                   comparison_rows(table, results), images, run_root)


def print_benchmark(kept: Path) -> None:
    """A benchmark table's leaderboard from every cell kept so far (this run's and earlier ones)."""
    from anomaly.report.group import assign_rows
    from anomaly.report.load import load_runs, select_runs
    from anomaly.report.leaderboard import leaderboards, print_leaderboard

    runs, _ = select_runs(load_runs([kept])) if kept.is_dir() else ([], None)
    assign_rows(runs)
    for board in leaderboards(runs):
        print_leaderboard(board)


def load_tables(only: str | None = None) -> list[Table]:
    """Every table config (or the one named `only`), composed as `anomaly.reproduce
    table=<name>` would compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    tables = []
    for path in sorted((CONF_DIR / "table").glob("*.yaml")):
        if only is not None and path.stem != only:
            continue
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose(config_name="reproduce", overrides=[f"table={path.stem}"], return_hydra_config=True)
        tables.append(Table.from_config(cfg.table, experiment=cfg.hydra.runtime.choices.get("experiment")))
    GlobalHydra.instance().clear()
    return tables


def measured_minutes(table: str, budget: str, results_dir: Path) -> dict[str, tuple[float, int]]:
    """Minutes per training measured by the kept results of a table × budget, by device kind
    (cpu / gpu): (mean, number of trainings)."""
    times: dict[str, list[float]] = {}
    for path in (results_dir / table / budget).glob("*/results.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        seconds = data.get("train_seconds")
        trained_in = (data.get("reproduce") or {}).get("trained_in")
        if data.get("status") != "ok" or not seconds or (trained_in and trained_in != path.parent.name):
            continue  # a cell scored with another cell's model
        kind = "gpu" if (data.get("machine") or {}).get("gpus") and _ran_on_gpu(data) else "cpu"
        times.setdefault(kind, []).append(float(seconds) / 60)
    return {k: (sum(v) / len(v), len(v)) for k, v in times.items()}


def _ran_on_gpu(data: dict) -> bool:
    """Whether a kept run trained on a GPU: its recorded accelerator, or for a file from before
    that was recorded, its command's choice of a GPU trainer."""
    if data.get("accelerator"):
        return data["accelerator"] == "cuda"
    command = str(data.get("command") or "")
    return "trainer=gpu" in command or "trainer=ddp" in command


def list_tables(results_dir: Path = Path("reproduced")) -> None:
    """Every table: its grid, and per budget the minutes a training takes (measured by the kept
    results where there are some, `~` the table's estimate otherwise) and the whole grid's hours.
    Fits an 80-column terminal."""
    from rich.console import Console
    from rich.table import Table as RichTable

    tables = load_tables()
    console = Console()
    console.print("python -m anomaly.reproduce table=<name> budget=<budget>", style="bold", highlight=False)
    # borderless; a table's name on a line of its own (whole: rows that differ only at the end
    # stay apart), its budgets under it; the budgets' settings fold in the room that is left
    view = RichTable(box=None, padding=(0, 0, 0, 1), pad_edge=False, header_style="bold underline")
    view.add_column("table / budget", no_wrap=True)
    view.add_column("cells/tr", no_wrap=True, justify="right")
    longest = max((len(f"{k.rsplit('.', 1)[-1]}={_short_number(v)}") for t in tables for b in t.budgets.values() for k, v in b.items()),
                  default=14)
    view.add_column("settings", overflow="fold", min_width=min(longest, 30))
    view.add_column("min/training CPU · GPU", overflow="fold", max_width=12)
    view.add_column("grid h CPU · GPU", overflow="fold", max_width=11)
    for table in tables:
        cells, groups = table.cells(), table.groups(table.cells())
        view.add_row(f"[bold]{table.name}[/]", f"{len(cells)}/{len(groups)}", "", "", "")
        budgets = list(table.budgets)
        for i, budget in enumerate(budgets):
            measured = measured_minutes(table.name, budget, results_dir)
            trainings = len(table.groups(table.cells(table.budget_restrictions(budget))))  # reduced: one seed
            per, hours = [], []
            counted = counted_cost(table, budget, results_dir)
            for device in ("cpu", "gpu"):
                if device in measured:
                    minutes, n = measured[device]
                    per.append(f"{minutes:.1f} (n={n})")
                elif device == "cpu" and counted is not None and "cpu" not in (table.minutes.get(budget) or {}):
                    # no estimate of the whole training (scoring too): the training's, from its counted FLOPs
                    minutes = counted[1]
                    per.append(f"f{minutes:.3g}")
                else:
                    minutes = (table.minutes.get(budget) or {}).get(device)
                    per.append("?" if minutes is None else f"~{minutes:g}")
                hours.append("?" if minutes is None else f"{trainings * minutes / 60:.1f}")
            # one setting a line: a setting is never cut mid-word
            settings = "\n".join(f"{k.rsplit('.', 1)[-1]}={_short_number(v)}" for k, v in table.budgets[budget].items())
            if counted is not None:
                settings += ("\n" if settings else "") + f"FLOPs/tr={_short_number(counted[0])}"
            view.add_row(f"  {budget}", "", settings or "published", " · ".join(per), " · ".join(hours),
                         end_section=i == len(budgets) - 1)
    console.print(view)
    console.print("min/training: measured (n trainings kept in reproduced/), f from the training FLOPs counted "
                  "(FLOPs/tr: a training's mean, reproduced/training_flops.json) at the CPU seconds per FLOP measured "
                  "with them (training only), or ~ estimated; grid h: every training of the grid", highlight=False)


def counted_cost(table: Table, budget: str, results_dir: Path) -> tuple[float, float] | None:
    """(training FLOPs, CPU minutes) of a training at a budget, averaged over the table's variants,
    from the FLOPs per image and CPU seconds per batch `--measure-flops` counted
    (results_dir/training_flops.json); a compute budget's FLOPs capped at its max_flops. None
    where a variant was not measured."""
    try:
        data = json.loads((results_dir / "training_flops.json").read_text())
    except (OSError, ValueError):
        return None
    found = (((data.get("tables") or {}).get(table.name) or {}).get(budget) or {}).get("variants") or {}
    variants = list(table.grid.get("variant") or [])
    if not variants or any(v not in found for v in variants):
        return None
    cap = table.budgets[budget].get("compute.max_flops")
    flops, minutes = [], []
    for variant in variants:
        entry = found[variant]
        full = float(entry["schedule_flops"])
        share = min(1.0, float(cap) / full) if cap and full else 1.0
        flops.append(full * share)
        minutes.append(float(entry.get("schedule_cpu_seconds") or 0.0) * share / 60)
    return sum(flops) / len(flops), sum(minutes) / len(minutes)


def _short_number(value):
    """A large number as 5.0e12 (a FLOP budget), anything else as it is."""
    if isinstance(value, float) and abs(value) >= 1e6:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return value


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"

"""The reproduce entry point's logic: which cells the command line asks for, running them, and
`--list`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError
from anomaly.console import user_errors
from anomaly.provenance import CONF_DIR
from anomaly.reproduce.runner import print_comparison, run_group
from anomaly.reproduce.tables import BUDGETS, Table
from anomaly.sweep import configure_job

log = logging.getLogger("anomaly")

# the reproduce app's own keys: never passed on to the cells' run configs
OWN_KEYS = ("table", "budget", "variant", "results_dir")


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


def run(cfg: DictConfig) -> None:
    with user_errors():
        configure_job(cfg)
        hc = HydraConfig.get()
        table = Table.from_config(cfg.table, experiment=hc.runtime.choices.get("experiment"))
        if cfg.budget not in BUDGETS:
            raise AnomalyError(f"budget={cfg.budget}: choose one of {list(BUDGETS)}")
        restrict, passed = split_overrides(table, cfg, list(hc.overrides.task))
        cells = table.cells(restrict)
        groups = table.groups(cells)
        run_root = Path(cfg.paths.output_dir)
        results_dir = Path(cfg.results_dir) if cfg.get("results_dir") else None
        log.info("table %s, budget %s: %d cells from %d trainings (%s)", table.name, cfg.budget, len(cells),
                 len(groups), table.source)
        results = []
        for number, group in enumerate(groups, 1):
            log.info("[%d/%d] training %s → %d cells", number, len(groups),
                     {k: v for k, v in table.training_key(group[0])}, len(group))
            results += run_group(table, group, cfg.budget, passed, run_root, results_dir)
        print_comparison(table, cfg.budget, results)
        failed = sum(r.get("status") != "ok" for r in results)
        where = f"; kept in {results_dir / table.name / cfg.budget}" if results_dir else ""
        print(f"{len(results) - failed} of {len(results)} cells ok; runs in {run_root}{where}")
        print(f"report: python -m anomaly.report {results_dir / table.name if results_dir else run_root}")
        if failed and hc.mode != RunMode.MULTIRUN:
            sys.exit(1)


def load_tables() -> list[Table]:
    """Every table config, composed as `anomaly.reproduce table=<name>` would compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    tables = []
    for path in sorted((CONF_DIR / "table").glob("*.yaml")):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose(config_name="reproduce", overrides=[f"table={path.stem}"], return_hydra_config=True)
        tables.append(Table.from_config(cfg.table, experiment=cfg.hydra.runtime.choices.get("experiment")))
    GlobalHydra.instance().clear()
    return tables


def list_tables() -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    view = RichTable(title="python -m anomaly.reproduce table=<name> [budget=paper|reduced|smoke]")
    for column in ("table", "grid", "cells", "trainings", "budgets (overrides)", "est. hours CPU / GPU"):
        view.add_column(column)
    for table in load_tables():
        grid = " × ".join(f"{k.rsplit('.', 1)[-1]} {len(v)}" for k, v in table.grid.items())
        budgets = "\n".join(f"{b}: " + (", ".join(f"{k}={v}" for k, v in table.budgets[b].items()) or "published")
                            for b in BUDGETS)
        cost = "\n".join(f"{b}: {_hours(table.cost(b, 'cpu'))} / {_hours(table.cost(b, 'gpu'))}" for b in BUDGETS)
        view.add_row(table.name, grid, str(len(table.cells())), str(len(table.groups(table.cells()))), budgets, cost)
    Console().print(view)


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"

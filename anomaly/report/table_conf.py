"""conf/table/<table>.yaml as it is now, read at report time: its published numbers and
references apply to results written before they were corrected or added. Callers look
`table_config` up through this module (tests replace it here)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=None)
def table_config(table: str):
    """The `anomaly.reproduce.tables.Table` of conf/table/<table>.yaml as it is now (None: no such
    table). The report takes the published numbers from it, so that a corrected or more detailed
    number (per class instead of a mean) applies to results written before the correction."""
    from omegaconf import OmegaConf

    from anomaly.reproduce.tables import Table

    path = Path(__file__).resolve().parents[2] / "conf" / "table" / f"{table}.yaml"
    try:
        return Table.from_config(OmegaConf.load(path).table)
    except Exception:  # noqa: BLE001 - a table this checkout does not have: the results' own numbers
        return None


def table_references(table: str) -> list[dict]:
    """The `references` of conf/table/<table>.yaml ([] for a table that is not there)."""
    config = table_config(str(table))
    return [dict(r) for r in config.references] if config is not None else []


def published_now(reproduce: dict | None) -> dict:
    """The table config's published numbers for a reproduced run's cell ({}: none, or no config)."""
    if not reproduce or not isinstance(reproduce.get("cell"), dict):
        return {}
    config = table_config(str(reproduce.get("table")))
    if config is None:
        return {}
    from anomaly.reproduce.tables import Cell

    return config.published(Cell.of(reproduce["cell"]))

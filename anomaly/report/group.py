"""Group: which runs make a row, a column and a cell.

A reproduced table's runs (they carry `reproduce`): the row keys are its grid's keys other than the
classes (`CELL_CLASS`, the columns) and the repetitions (`CELL_SWEPT`, averaged within a cell),
its test keys and variants among them, read from conf/table/<table>.yaml (`row_keys`). Runs of one
cell whose settings still differ are never averaged: the table is split by those settings.

The fallback, for runs of no table (an ad-hoc folder) and for the per-dataset × protocol tables
that every run gets: rows inferred from the settings that differ among the runs of one method ×
dataset × protocol (× table × budget) (`split_keys`, `assign_rows`); a run lacking a key others
have joins the row it otherwise matches.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from anomaly.report import table_conf
from anomaly.report.labels import group_title, natural, settings_text
from anomaly.report.load import Run, hashable


# the roles of a table's cell keys: repetitions (averaged within a cell), classes (the columns);
# every other key is a row. The number of drawn objects (COIL-100's protocol.n_normal) is a row:
# 1, 4 and 7 objects are different experiments, never averaged together
CELL_SWEPT = {"seed", "protocol.seed", "protocol.fold", "protocol.draw", "fold", "draw"}
CELL_CLASS = {"protocol.normal", "protocol.anomalous", "normal", "anomalous"}
MISSING = "?"  # a run that lacks a row-splitting key and matches no single row


# ---- reproduced tables: keys from the table config -----------------------------------------------
def recorded_cell(run: Run) -> dict:
    """The cell a reproduced run ran (`reproduce.cell`: grid key → value; {} for other runs)."""
    cell = (run.reproduce or {}).get("cell")
    return cell if isinstance(cell, dict) else {}


def cell_of(run: Run) -> tuple:
    """The run's whole cell, repetition included, as sorted (key, value) pairs."""
    return tuple(sorted((str(k), hashable(v)) for k, v in recorded_cell(run).items()))


def row_keys(run: Run) -> list[str]:
    """The keys that make a reproduced run's row: its table's grid keys that are neither classes
    nor repetitions (the variant, a test key such as an outlier share, an object count), from
    conf/table/<table>.yaml, and any key its cell adds beyond the grid (a run restricted outside
    it). A table this checkout lacks: the keys the run's cell records."""
    cell = recorded_cell(run)
    config = table_conf.table_config(str((run.reproduce or {}).get("table")))
    grid = list(config.grid) if config is not None else []
    return [k for k in [*grid, *(k for k in cell if k not in grid)] if k not in CELL_SWEPT | CELL_CLASS]


def row_of(run: Run) -> tuple:
    """A reproduced run's row: its cell's (key, value) at `row_keys`, sorted."""
    cell = recorded_cell(run)
    return tuple(sorted((str(k), hashable(cell[k])) for k in row_keys(run) if k in cell))


def paper_rows(members: Sequence[Run]) -> dict[tuple, dict[tuple, dict[str, list[Run]]]]:
    """One reproduced table × budget × flags as split → row (`row_of`) → class column → runs. A
    setting that differs only from cell to cell is the cells' own; one that differs among the
    runs of one cell (a config changed under a kept cell) is never averaged over: the table is
    split by it (`split`, () when none)."""
    by_cell: dict[tuple, list[Run]] = defaultdict(list)
    for run in members:
        by_cell[(row_of(run), run.column)].append(run)
    keys = sorted({k for cell_runs in by_cell.values() for k in split_keys(cell_runs)})
    by_split: dict[tuple, dict[tuple, dict[str, list[Run]]]] = defaultdict(lambda: defaultdict(dict))
    for run in members:
        by_split[split_values(run, members, keys)][row_of(run)].setdefault(run.column, []).append(run)
    return by_split


# ---- the fallback: rows inferred from the settings that differ -----------------------------------
def split_keys(members: Sequence[Run], exempt=lambda key: False) -> list[str]:
    """The setting keys on which runs that have them disagree (not `exempt` ones)."""
    names = sorted({k for r in members for k in r.settings if not exempt(k)})
    return [k for k in names if len({r.settings[k] for r in members if k in r.settings}) > 1]


def split_values(run: Run, members: Sequence[Run], keys: Sequence[str]) -> tuple:
    """(key, value) for each key; a run lacking a key takes the value of the runs that match it on
    the keys it has (when they agree on one), else MISSING."""
    out = []
    for key in keys:
        if key in run.settings:
            out.append((key, run.settings[key]))
            continue
        known = [k for k in keys if k in run.settings]
        values = {r.settings[key] for r in members if key in r.settings
                  and all(r.settings.get(k) == run.settings[k] for k in known)}
        out.append((key, values.pop() if len(values) == 1 else MISSING))
    return tuple(out)


def assign_rows(runs: list[Run]) -> None:
    """Row = method, dataset, protocol, flags (debug / rescore) and the settings that differ."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        # a reproduced table's runs are rows of that table × budget alone (their settings differ
        # from another budget's, which is another table)
        table = (run.reproduce or {}).get("table")
        groups[(run.method, run.dataset, run.protocol, run.flags, table, run.budget if table else None)].append(run)
    for key, members in groups.items():
        keys = split_keys(members)
        for run in members:
            run.row = key[:4] + (split_values(run, members, keys),)


# ---- the per-dataset × protocol tables -----------------------------------------------------------
def ordered_columns(runs: Iterable[Run], column=lambda r: r.column) -> list[str]:
    """The class columns in the dataset's label order where the runs recorded their class ids
    (0…9, T-shirt/top … Ankle boot), the others after them in natural order."""
    ids: dict[str, tuple] = {}
    for run in runs:
        ids.setdefault(column(run), run.column_ids if column(run) == run.column else ())
    return sorted(ids, key=lambda c: (0, ids[c], []) if ids[c] else (1, (), natural(c)))


def protocol_group(run: Run) -> tuple:
    """Dataset × protocol × its differing protocol settings: one table, compare table and set of
    plots. A reproduced table's run: dataset × protocol × its table and budget × the grid keys of
    its row (GPND's outlier share), never a setting that one of its variants carries (a method's
    own val_fraction in a benchmark)."""
    method, dataset, protocol, flags, settings = run.row
    table = (run.reproduce or {}).get("table")
    if table:
        grid = tuple(s for s in row_of(run) if s[0] != "variant")
        return (dataset, protocol, (("table", table), ("budget", str(run.budget)), *grid))
    return (dataset, protocol, tuple(s for s in settings if s[0].startswith("protocol.")))


def _row_settings(run: Run) -> list[tuple]:
    """The settings that set a run's row apart within its group (a reproduced table's variant's
    protocol settings too: they are not the group's)."""
    method, dataset, protocol, flags, settings = run.row
    grouped = {k for k, _ in protocol_group(run)[2]}
    own = bool((run.reproduce or {}).get("table"))
    return [s for s in settings if s[0] not in grouped and (own or not s[0].startswith("protocol."))]


def protocol_groups(runs: Iterable[Run]) -> list[tuple[tuple, list[Run]]]:
    """The runs by dataset × protocol (× differing protocol settings), in title order: one table,
    compare table and set of plots each (classes of one dataset, never mixed with another's)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[protocol_group(run)].append(run)
    return sorted(groups.items(), key=lambda kv: natural(group_title(kv[0])))


def row_name(run: Run) -> str:
    """A row of its dataset × protocol table: the method, its flags and the settings that set
    the row apart (`gpnd · trainer.max_epochs=10`)."""
    method, dataset, protocol, flags, settings = run.row
    return " · ".join([method, *flags] + [settings_text([s]) for s in _row_settings(run)])


def method_label(run: Run) -> str:
    """The method with whatever else sets its row apart within a protocol group."""
    method, dataset, protocol, flags, settings = run.row
    extra = [settings_text([s], "") for s in _row_settings(run)]
    return " · ".join([method, *flags]) + (f" ({', '.join(extra)})" if extra else "")

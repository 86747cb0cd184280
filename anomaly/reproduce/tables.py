"""Published tables as data: a table's grid of cells, its budgets, and its published numbers.

A table config (`conf/table/<name>.yaml`) names the experiment it runs, its grid (config key →
values; the cells are their product), the keys that change only the validation and test sets
(`test_keys`: one training serves all their values), the published numbers, the budgets
(config overrides per budget, and per variant where variants need different ones) and what a
training costs. Everything here is plain data and pure functions; `anomaly.reproduce.runner`
runs the cells.

A benchmark table (`variants_from: method`) has a variant per config in conf/method/, found
when the table is read: a new method joins every benchmark with no edit of the table.
"""

from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError
from anomaly.provenance import portable_words

# every table has these; a table may add its own (a benchmark's equal_steps)
BUDGETS = ("paper", "reduced", "smoke")


@dataclass(frozen=True)
class Cell:
    """One cell of a table: a value for every grid key (`variant` picks the model)."""

    values: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, values: dict[str, Any]) -> "Cell":
        """The cell with these {grid key: value} (as `as_dict` gives them, and results record them)."""
        return cls(tuple((k, _freeze(v)) for k, v in values.items()))

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.values).get(key, default)

    @property
    def as_dict(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.values}

    def slug(self) -> str:
        """A directory name: `variant-normal3-fold0-outlier_ratio0.1`."""
        parts = []
        for key, value in self.values:
            short = key.rsplit(".", 1)[-1]
            text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
            parts.append(text if key == "variant" else f"{short}{text}")
        return "-".join(parts).replace("/", "_")


@dataclass
class Table:
    name: str
    source: str
    metric: str
    grid: dict[str, list]
    test_keys: list[str]
    paper: list[dict]
    budgets: dict[str, dict[str, Any]]
    variants: dict[str, list[str]] = field(default_factory=dict)
    paper_mean: dict[str, float] = field(default_factory=dict)
    minutes: dict[str, dict[str, float]] = field(default_factory=dict)
    experiment: str | None = None
    # other published numbers beside the paper's (a later version of the authors' code…): each
    # {source, where, metric: value}; shown with the table, never what `below` is judged against
    references: list[dict] = field(default_factory=list)
    # per budget, per variant: overrides beyond the budget's own (a method's schedule at that budget)
    variant_budgets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # "method": one variant per conf/method/<name>.yaml (a benchmark); None: the listed variants
    variants_from: str | None = None
    # the field's published means on the table's protocol (methods run here or not), each
    # {method, source, metric: value, variant: the one run here (optional)}: shown beside ours
    field_means: list[dict] = field(default_factory=list)
    # why a table has no published numbers (`paper: []`): said where its Δ would be
    no_paper: str | None = None

    @classmethod
    def from_config(cls, node: DictConfig | dict, experiment: str | None = None) -> "Table":
        data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        table = cls(name=data["name"], source=data.get("source", ""), metric=data.get("metric", "auroc"),
                    grid={k: list(v) for k, v in (data.get("grid") or {}).items()},
                    test_keys=list(data.get("test_keys") or []), paper=list(data.get("paper") or []),
                    budgets={k: dict(v or {}) for k, v in (data.get("budgets") or {}).items()},
                    variants={k: list(v) for k, v in (data.get("variants") or {}).items()},
                    paper_mean=dict(data.get("paper_mean") or {}),
                    minutes=dict(data.get("minutes") or {}), experiment=experiment,
                    references=[dict(r) for r in data.get("references") or []],
                    variant_budgets={b: {v: dict(o or {}) for v, o in (per or {}).items()}
                                     for b, per in (data.get("variant_budgets") or {}).items()},
                    variants_from=data.get("variants_from"),
                    field_means=[dict(r) for r in data.get("field") or []], no_paper=data.get("no_paper"))
        if table.variants_from is not None:
            table.discover_variants(data.get("variant_settings") or {})
        table.check()
        return table

    def discover_variants(self, settings: dict[str, Any]) -> None:
        """One variant per method config (conf/method/<name>.yaml): `method=<name>`, then the
        table's `variant_overrides`, then what `variant_settings[<name>]` adds for that method
        (a schedule where conf/paper has none for the table's dataset); the grid's `variant` is
        every one of them unless the table lists its own."""
        if self.variants_from != "method":
            raise AnomalyError(f"table {self.name}: variants_from={self.variants_from!r}; only 'method' is known")
        from anomaly.provenance import CONF_DIR

        names = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
        unknown = sorted(set(settings) - set(names) - {"variant_overrides"})
        if unknown:
            raise AnomalyError(f"table {self.name}: variant_settings for {unknown}, which are not in conf/method/")
        common = list(settings.get("variant_overrides") or [])
        for name in names:
            own = [f"{k}={_text(v)}" for k, v in (settings.get(name) or {}).items()]
            self.variants[name] = [f"method={name}", *common, *own]
        self.grid.setdefault("variant", names)
        self.grid = {"variant": self.grid.pop("variant"), **self.grid}  # methods first: rows of the table

    def check(self) -> None:
        missing = [b for b in BUDGETS if b not in self.budgets]
        if missing:
            raise AnomalyError(f"table {self.name}: budgets {missing} are not defined")
        for key in self.test_keys:
            if key not in self.grid:
                raise AnomalyError(f"table {self.name}: test key {key} is not in its grid")
        if "variant" in self.grid:
            unknown = [v for v in self.grid["variant"] if v not in self.variants]
            if unknown:
                raise AnomalyError(f"table {self.name}: grid variants {unknown} are not in its variants")
        for budget, per in self.variant_budgets.items():
            if budget not in self.budgets:
                raise AnomalyError(f"table {self.name}: variant_budgets for budget {budget}, which it does not define")
            unknown = sorted(set(per) - set(self.variants))
            if unknown:
                raise AnomalyError(f"table {self.name}: variant_budgets.{budget} names {unknown}, not among its "
                                   f"variants {sorted(self.variants)}")

        for entry in self.field_means:
            if not entry.get("method") or not entry.get("source") or self.metric not in entry:
                raise AnomalyError(f"table {self.name}: each `field` entry needs a method, a source and its "
                                   f"{self.metric}, got {entry}")
        for ref in self.references:
            if not ref.get("source") or not any(k not in ("source", "where") for k in ref):
                raise AnomalyError(f"table {self.name}: each reference needs a source and a number, got {ref}")

    def budget_overrides(self, budget: str, variant: str | None = None) -> dict[str, Any]:
        """The budget's overrides, then the variant's own at that budget (a grid key among them
        restricts the grid instead: `budget_restrictions`)."""
        if budget not in self.budgets:
            raise AnomalyError(f"budget={budget}: table {self.name} has budgets {sorted(self.budgets)}")
        merged = {**self.budgets[budget], **self.variant_budgets.get(budget, {}).get(variant, {})}
        return {k: v for k, v in merged.items() if k not in self.grid}

    def budget_restrictions(self, budget: str) -> dict[str, Any]:
        """The grid keys a budget fixes (`reduced: {seed: 0}`: the reduced budget runs one seed of
        the grid's three); the command line's own value for such a key wins."""
        return {k: v for k, v in self.budgets[budget].items() if k in self.grid}

    def cells(self, restrict: dict[str, Any] | None = None) -> list[Cell]:
        """Every cell of the grid, or those with the restricted keys at the given values (a key
        the grid lacks, or a value it lacks, becomes a one-value grid: any subset or neighbour
        of the published table can be run the same way)."""
        grid = {k: [_freeze(v) for v in values] for k, values in self.grid.items()}
        for key, value in (restrict or {}).items():
            if key == "variant" and value not in self.variants:
                raise AnomalyError(f"variant={value}: table {self.name} has variants {sorted(self.variants)}")
            grid[key] = [_freeze(value)]
        keys = list(grid)
        return [Cell(tuple(zip(keys, combo))) for combo in itertools.product(*(grid[k] for k in keys))]

    def training_key(self, cell: Cell) -> tuple:
        """Cells with the same training key share one model (they differ only in test keys)."""
        return tuple((k, v) for k, v in cell.values if k not in self.test_keys)

    def groups(self, cells: list[Cell]) -> list[list[Cell]]:
        order: dict[tuple, list[Cell]] = {}
        for cell in cells:
            order.setdefault(self.training_key(cell), []).append(cell)
        return list(order.values())

    def published(self, cell: Cell) -> dict[str, float]:
        """The published numbers that apply to a cell (entries whose `where` it matches)."""
        out: dict[str, float] = {}
        for entry in self.paper:
            where = entry.get("where") or {}
            if all(_freeze(cell.get(k, _DEFAULTS.get(k))) == _freeze(v) for k, v in where.items()):
                out.update({k: float(v) for k, v in entry.items() if k != "where"})
        return out

    def overrides(self, cell: Cell, budget: str, user: list[str]) -> list[str]:
        """Compose overrides for a cell: the variant's (or the table's experiment), the budget's,
        the cell's values, then the user's own (which win over the budget's)."""
        variant = cell.get("variant")
        base = list(self.variants[variant]) if variant else [f"experiment={self.experiment}"]
        user_keys = {_key(o) for o in user}
        budget_values = {k: v for k, v in self.budget_overrides(budget, variant).items() if k not in user_keys}
        cell_values = {k: _thaw(v) for k, v in cell.values if k != "variant" and k not in user_keys}
        # ++: a budget may set a trainer key the trainer config leaves to Lightning's default
        return (base + [f"++{k}={_text(v)}" for k, v in budget_values.items()]
                + [f"{k}={_text(v)}" for k, v in cell_values.items()] + list(user))

    def command(self, cell: Cell, budget: str, user: list[str]) -> str:
        """The command that runs exactly this cell again, anywhere: no machine paths in it (the
        data and log dirs come from the environment or the defaults)."""
        words = ["python", "-m", "anomaly.reproduce", f"table={self.name}", f"budget={budget}"]
        words += [f"{k}={_text(_thaw(v))}" for k, v in cell.values]
        words += [o for o in user if not o.startswith(("table=", "budget="))]
        return " ".join(shlex.quote(w) for w in portable_words(words))

    def cost(self, budget: str, device: str = "cpu") -> float | None:
        """Estimated hours for the whole grid at a budget (trainings × minutes per training)."""
        minutes = (self.minutes.get(budget) or {}).get(device)
        if minutes is None:
            return None
        return len(self.groups(self.cells(self.budget_restrictions(budget)))) * float(minutes) / 60.0


# keys a cell may lack but a `where` may name, with the value they take when absent
_DEFAULTS: dict[str, Any] = {"variant": None}


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _text(value: Any) -> str:
    """A value as a Hydra override writes it ([3] for a list, 0.1 for a float)."""
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)

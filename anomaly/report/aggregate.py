"""results.json files → runs → table rows and cells (no formatting here: see `render`).

What may be averaged: a cell averages the runs whose run config differs only in the swept keys
(`SWEPT_KEYS`: the seeds, the fold, the draw) and the class keys (`CLASS_KEYS`, which make the
columns). Every other difference (a trainer setting, a method setting, the budget, the image size,
the batch size…) puts the runs into rows of their own, labelled by the key(s) and value(s) that
differ; bookkeeping keys (`IGNORED_KEYS`: paths, loggers, callbacks, threads, the data root…)
are never compared. The config compared is results.json's `config` (the resolved run config);
files without one fall back to `method_settings` and `protocol`. Where a run lacks a key that
others have (a failed run records only the settings as requested), the key does not count as a
difference, and the run joins the row of the runs it otherwise matches.

Left out unless asked for: smoke / debug runs (`debug` set; files without that field: a config
with `trainer.fast_dev_run` or `trainer.limit_*_batches` below the whole set) and re-scores
(`run_kind: rescore`, written by `python -m anomaly.evaluate`; older files: a `threshold_refit`
entry). When included they get rows of their own, labelled `debug` / `rescore`.

Paper numbers: runs made by `python -m anomaly.reproduce` carry `reproduce` = {table, cell:
{config key: value}, paper: {metric: published number for this cell}, paper_mean: {metric: the
paper's own mean over the table}, metric, paper_source, trained_in}, metrics under this
project's names (`auroc`, `f1_inlier`, …; `f1_paper` for the F1 the protocol's paper reports); a
value above 1 for a metric in [0, 1] is read as a percentage. `paper_tables` lays a reproduced
table out as rows (the cell keys other than the classes and the repetitions: an outlier ratio, a
variant) × class columns, each cell averaged over its seeds / folds / draws, and sets ours against
the paper per cell and for each row's mean. The paper's side of a mean: the paper's number for
the row when it gives one number for all of the row's classes (its mean over them), else its
published `paper_mean` (a table of one row; several rows: an extra line over all cells), else the
mean of its numbers over the cells that have one (ours then over the same cells). A cell is marked
"below" only when ours is below the paper by more than the std over our runs in that cell; with
one run per cell (one fold, seed or draw) there is no spread and no verdict ("no spread"). The spread of a mean is the std over repetitions
of the mean over its cells.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from anomaly.evaluation.suspect import recorded_flags
from anomaly.provenance import schedule_text
from anomaly.plots import protocol_classes


class ReportError(SystemExit):
    """A user-facing report error: the command line prints `error: <message>` and exits 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# config keys that repeat an experiment (averaged over)
SWEPT_KEYS = {"seed", "protocol.seed", "protocol.fold", "protocol.draw"}
# protocol keys that say which classes are normal (they make the columns)
CLASS_KEYS = {"protocol.name", "protocol.normal", "protocol.normal_names", "protocol.normal_ids",
              "protocol.anomalous", "protocol.anomalous_ids", "protocol.anomalous_names",
              "protocol.n_normal"}
# bookkeeping: where a run ran and wrote, not what it measured (a key or everything below it)
IGNORED_KEYS = ("paths", "logger", "callbacks", "print_config", "threads", "ckpt_path", "hydra", "task_name",
                "debug", "data_dir", "dataset.loader.root", "dataset.root", "dataset.loader.download",
                "dataset.loader.url", "dataset.loader.sha256", "data.num_workers", "data.pin_memory",
                "data.persistent_workers", "trainer.default_root_dir", "trainer.enable_progress_bar",
                "trainer.enable_model_summary", "trainer.enable_checkpointing", "trainer.log_every_n_steps",
                "trainer.logger", "trainer.callbacks", "trainer.accelerator", "trainer.devices",
                "trainer.strategy", "trainer.num_nodes")
METRIC_NAMES = {"auroc": "AUROC", "f1_paper": "F1 (the protocol paper's)", "f1": "F1 (anomalies positive)",
                "f1_inlier": "F1 (inliers positive)", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out",
                "fpr95": "FPR at 95 % TPR", "precision": "precision (anomalies positive)",
                "recall": "recall (anomalies positive)", "precision_inlier": "precision (inliers positive)",
                "recall_inlier": "recall (inliers positive)", "detection_error": "detection error",
                "threshold": "threshold"}
SHORT_NAMES = {"auroc": "AUROC", "f1_paper": "F1", "f1": "F1", "f1_inlier": "F1 inlier", "aupr_in": "AUPR-in",
               "aupr_out": "AUPR-out", "fpr95": "FPR95", "detection_error": "det. error"}
# metrics that lie in [0, 1] (a paper number above 1 is a percentage)
BOUNDED = {"auroc", "f1_paper", "f1", "f1_inlier", "aupr_in", "aupr_out", "fpr95", "precision", "recall",
           "precision_inlier", "recall_inlier", "detection_error"}
MISSING = "?"  # a run that lacks a row-splitting key and matches no single row


def is_ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def allowed_metrics(runs: Iterable["Run"] = ()) -> list[str]:
    """The metrics a table can be made of: the known ones and any the runs recorded."""
    names = list(METRIC_NAMES)
    for run in runs:
        names += [k for k in run.metrics if k not in names]
    return names


def check_metrics(metrics: Sequence[str], runs: Iterable["Run"] = ()) -> None:
    allowed = allowed_metrics(runs)
    for metric in metrics:
        if metric not in allowed:
            raise ReportError(f"--metric {metric}: not a metric; choose from {', '.join(allowed)}")


# ---- runs ----------------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    method: str
    dataset: str
    protocol: str
    column: str
    settings: dict[str, Any]
    repetition: dict[str, Any]
    status: str
    metrics: dict[str, float | None]
    threshold_strategy: str | None
    problem: str | None = None
    debug: str | None = None
    run_kind: str = "train"
    budget: str | None = None
    reproduce: dict | None = None
    command: str | None = None
    row: tuple = field(default=(), compare=False)
    # the dataset's ids of the column's classes (its label order: Fashion-MNIST's T-shirt/top
    # first), where recorded; () for drawn classes
    column_ids: tuple = ()
    # numbers that cannot be right (anomaly.evaluation.suspect): the cells they go into are marked
    suspect: tuple = ()
    # what tells a re-run or re-score of one run config from another run (report.selection)
    config_hash: str | None = None
    train_hash: str | None = None
    created: str | None = None
    # the images the run's copy of the dataset held against the release's (results.json dataset_size)
    dataset_size: dict | None = None
    # epochs trained against the paper's schedule for the method × dataset ("6/80 ep", "20 ep")
    schedule: str | None = None
    # what the run chose with labelled validation anomalies (None: nothing; see labelled_choice)
    labelled_selection: str | None = None
    # what its training cost (results.json `cost`, anomaly.cost: FLOPs, updates, seconds, share)
    cost: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def flags(self) -> tuple[str, ...]:
        """What keeps a run out of ordinary rows: ("debug",), ("rescore",), both or ()."""
        return (("debug",) if self.debug else ()) + (("rescore",) if self.run_kind == "rescore" else ())

    def metric_key(self, metric: str) -> str:
        if metric == "f1_paper":
            return "f1_inlier" if self.threshold_strategy == "f1_inlier" else "f1"
        return metric

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(self.metric_key(metric))
        return None if value is None or not math.isfinite(value) else float(value)

    def paper_value(self, metric: str) -> float | None:
        """The paper's number for this run's cell (None: the paper has none): the table config's
        as it is now (`published_now`), else the one recorded with the run."""
        paper = published_now(self.reproduce) or (self.reproduce or {}).get("paper") or {}
        return _paper_number(paper, metric, self.metric_key(metric))

    def paper_mean(self, metric: str) -> float | None:
        """The paper's own mean over the table, when `reproduce.paper_mean` gives one."""
        mean = (self.reproduce or {}).get("paper_mean")
        return _paper_number(mean, metric, self.metric_key(metric)) if isinstance(mean, dict) else None


def _paper_number(paper: dict, metric: str, resolved: str) -> float | None:
    for key in dict.fromkeys((metric, resolved)):
        value = paper.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            value = float(value)
            return value / 100.0 if metric in BOUNDED and value > 1.0 else value
    return None


def _listed(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value


@functools.lru_cache(maxsize=None)
def canonical_target(path: str) -> str:
    """A `_target_` as the object it names: a class moved to another module and still importable
    under its old path (anomaly.data.protocols.CoilRandom, now …protocols.coil_random.CoilRandom)
    is the same setting, so results from before and after the move share a row. A path that no
    longer imports is compared as written."""
    parts = path.split(".")
    obj = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return path
        break
    if obj is None:  # gone or renamed: the text is all there is
        return path
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if module and name else path


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"max_epochs": 10}} → {"trainer.max_epochs": 10} (lists kept as tuples)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = _hashable(value)
    return out


def column_label(protocol: dict, config_protocol: dict | None = None) -> str:
    """The class column of a run: its normal class names, `¬k` for an anomalous class given, or
    `<n> drawn` when the protocol drew its normal classes (COIL-100's `n_normal` with a draw)."""
    role, names = protocol_classes(protocol)
    if role == "anomalous":
        return "¬" + "+".join(names)
    if (config_protocol is not None and config_protocol.get("normal") is None
            and config_protocol.get("anomalous") is None and protocol.get("n_normal") is not None):
        return f"{protocol['n_normal']} drawn"
    return "+".join(names) if names else "default"


def class_ids(protocol: dict) -> tuple:
    """The dataset ids of a run's column classes (`anomalous_ids` where it was given the anomalous
    class, else `normal_ids`); () where not recorded or drawn (COIL-100's `n_normal`)."""
    ids = protocol.get("anomalous_ids") if protocol.get("anomalous") else protocol.get("normal_ids")
    if protocol.get("n_normal") is not None or not isinstance(ids, list):
        return ()
    return tuple(int(i) for i in ids if isinstance(i, int))


def ordered_columns(runs: Iterable["Run"], column=lambda r: r.column) -> list[str]:
    """The class columns in the dataset's label order where the runs recorded their class ids
    (0…9, T-shirt/top … Ankle boot), the others after them in natural order."""
    ids: dict[str, tuple] = {}
    for run in runs:
        ids.setdefault(column(run), run.column_ids if column(run) == run.column else ())
    return sorted(ids, key=lambda c: (0, ids[c], []) if ids[c] else (1, (), natural(c)))


def debug_reason(data: dict) -> str | None:
    """Why a run is a smoke / debug run (None: it is not)."""
    if "debug" in data:
        return str(data["debug"]) if data["debug"] else None
    trainer = ((data.get("config") or {}).get("trainer")) or {}
    if trainer.get("fast_dev_run"):
        return f"trainer.fast_dev_run={trainer['fast_dev_run']}"
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if isinstance(value, bool) or value is None:
            continue
        # an int is a number of batches; a float below 1 a fraction of them
        if isinstance(value, int) or (isinstance(value, float) and value < 1.0):
            return f"trainer.{key}={value}"
    return None


def _paper_strategy(data: dict) -> str | None:
    """The threshold rule the run was configured with (the protocol paper's convention; a
    fallback that had to be used instead does not change which F1 the paper reported)."""
    fit = data.get("threshold_fit") if isinstance(data.get("threshold_fit"), dict) else {}
    return fit.get("configured") or data.get("threshold_strategy")


def run_from_results(path: Path, data: dict) -> Run:
    protocol = dict(data.get("protocol") or {})
    config = data.get("config") if isinstance(data.get("config"), dict) else None
    settings: dict[str, Any] = {}
    if config is not None:
        settings.update(flatten(config))
    else:
        settings.update(flatten(data.get("method_settings") or {}, "method."))
    # the protocol as resolved (an outlier ratio left null in the config is recorded here)
    settings.update(flatten({k: v for k, v in protocol.items() if not isinstance(v, dict)}, "protocol."))
    settings = {k: canonical_target(v) if k.rsplit(".", 1)[-1] == "_target_" and isinstance(v, str) else v
                for k, v in settings.items() if k not in SWEPT_KEYS | CLASS_KEYS and not is_ignored(k)}
    settings["budget"] = data.get("budget") or "none"
    # one process where a file predates the record (a DDP run gets a row of its own)
    settings.setdefault("topology.world_size", 1)
    repetition = {k: protocol.get(k) for k in ("draw", "fold", "seed") if k in protocol}
    repetition["seed"] = data.get("seed", (config or {}).get("seed", protocol.get("seed")))
    run_kind = data.get("run_kind") or ("rescore" if "threshold_refit" in data else "train")
    reproduce = data.get("reproduce") if isinstance(data.get("reproduce"), dict) else None
    return Run(path=path.parent, method=str(data.get("method") or "?"), dataset=str(data.get("dataset") or "?"),
               protocol=str(protocol.get("name") or "?"),
               column=column_label(protocol, (config or {}).get("protocol") if config else None),
               settings=settings, repetition=repetition, status=data.get("status") or "ok",
               metrics=data.get("metrics") or {}, threshold_strategy=_paper_strategy(data),
               problem=data.get("problem") or data.get("error"), debug=debug_reason(data), run_kind=str(run_kind),
               budget=data.get("budget"), reproduce=reproduce,
               command=data.get("command") if isinstance(data.get("command"), str) else None,
               column_ids=class_ids(protocol), suspect=tuple(recorded_flags(data)),
               config_hash=data.get("config_hash"), train_hash=data.get("train_hash"), created=data.get("created"),
               dataset_size=data.get("dataset_size") if isinstance(data.get("dataset_size"), dict) else None,
               schedule=schedule_text(data), labelled_selection=labelled_choice(data),
               cost=data.get("cost") if isinstance(data.get("cost"), dict) else None)


def labelled_choice(data: dict) -> str | None:
    """What a run chose with labelled validation anomalies: results.json's `labelled_selection`;
    for an OC-SVM kept before runs recorded it, its γ grid where it has several values (it was
    chosen by validation AUROC then)."""
    if "labelled_selection" in data:
        return data["labelled_selection"]
    gammas = (data.get("method_settings") or {}).get("gammas")
    if data.get("method") == "ocsvm" and isinstance(gammas, list) and len(gammas) > 1:
        return f"γ chosen from {gammas} by validation AUROC"
    return None


# protocol settings that cut the data below the dataset's (a benchmark's reduced budget)
DATA_LIMITS = (("protocol.n_train", "training images"), ("protocol.n_test", "test images"))


def data_limits(runs: Iterable[Run]) -> str | None:
    """'1,000 training images · 1,000 test images' where every run shares such a cut; None else."""
    runs = list(runs)
    parts = []
    for key, words in DATA_LIMITS:
        values = {r.settings.get(key) for r in runs}
        value = values.pop() if len(values) == 1 else None
        if isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{value:,} {words}")
    return " · ".join(parts) or None


def shared_schedule(runs: Iterable[Run]) -> str | None:
    """The schedule every run shares (None: they differ, or none is known)."""
    found = {r.schedule for r in runs}
    return found.pop() if len(found) == 1 else None


def run_identity(data: dict) -> str | None:
    """What makes a results.json one run, wherever its file lies (None: too little recorded)."""
    if not data.get("created") or not data.get("config_hash"):
        return None
    return json.dumps([data["created"], data["config_hash"], data.get("protocol"), data.get("seed"),
                       data.get("metrics"), data.get("status")], sort_keys=True, default=str)


def load_runs(dirs: Sequence[str | Path]) -> list[Run]:
    """Every results.json below `dirs` (a report dir of an earlier report is skipped; runs
    finished by a later resumed run are shown there). A run and its kept copy (the run dir and
    reproduced/) are one run: runs are told apart by what they are (creation time, config hash,
    protocol and numbers), not by where their file lies."""
    runs, seen, identities = [], set(), set()
    for root in dirs:
        root = Path(root)
        if not root.exists():
            raise ReportError(f"{root}: no such directory")
        paths = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for path in paths:
            if path.resolve() in seen or (root.is_dir() and "report" in path.relative_to(root).parts[:-1]):
                continue
            seen.add(path.resolve())
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                print(f"warning: skipped {path}: {err}", file=sys.stderr)
                continue
            if not isinstance(data, dict) or data.get("status") == "resumed":
                continue
            identity = run_identity(data)
            if identity is not None:
                if identity in identities:
                    continue
                identities.add(identity)
            runs.append(run_from_results(path, data))
    return runs


@dataclass
class LeftOut:
    """Runs kept out of the tables, by reason (the last two: `anomaly.report.selection`)."""
    debug: list[Run] = field(default_factory=list)
    rescore: list[Run] = field(default_factory=list)
    not_ok: list[Run] = field(default_factory=list)  # failed, interrupted, invalid scores
    repeats: int = 0  # results of a run config already counted (its newest counts)

    def __bool__(self) -> bool:
        return bool(self.debug or self.rescore or self.not_ok or self.repeats)

    def line(self) -> str:
        """One line: how many were left out, why, and the option that includes them."""
        parts = []
        if self.debug:
            reasons = sorted({r.debug for r in self.debug if r.debug})
            shown = ", ".join(reasons[:3]) + (", …" if len(reasons) > 3 else "")
            parts.append(f"{_count(len(self.debug), 'smoke/debug run')} ({shown}; --include-debug)")
        if self.rescore:
            parts.append(f"{_count(len(self.rescore), 're-score')} (python -m anomaly.evaluate of a "
                         "trained run; --include-rescores)")
        if self.not_ok:
            statuses = Counter(r.status for r in self.not_ok)
            parts.append(f"{_count(len(self.not_ok), 'run')} not ok ("
                         + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) + ")")
        if self.repeats:
            parts.append(f"{_count(self.repeats, 'repeat')} of a run config counted once (its newest result)")
        return "Left out: " + "; ".join(parts) + "." if parts else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def select_runs(runs: list[Run], include_debug: bool = False,
                include_rescores: bool = False) -> tuple[list[Run], LeftOut]:
    kept, left = [], LeftOut()
    for run in runs:
        if run.debug and not include_debug:
            left.debug.append(run)
        elif run.run_kind == "rescore" and not include_rescores:
            left.rescore.append(run)
        else:
            kept.append(run)
    return kept, left


# ---- rows ----------------------------------------------------------------------------------------
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


def setting_text(key: str, value: Any) -> str:
    """`outlier_ratio=0.5`, `lr=0.001` (protocol / method settings), `trainer.max_epochs=10`."""
    name = key.split(".", 1)[1] if key.startswith(("protocol.", "method.")) else key
    if value is None:  # unset: a count (n_train) then takes all there are
        value = "all" if name.rsplit(".", 1)[-1].startswith("n_") else "none"
    if isinstance(value, tuple):
        value = "[" + ",".join(map(str, value)) + "]"
    return f"{name}={value}"


def settings_text(settings: Iterable[tuple[str, Any]], sep: str = " · ") -> str:
    return sep.join(setting_text(k, v) for k, v in settings)


def row_label(row: tuple) -> str:
    method, dataset, protocol, flags, settings = row
    return " · ".join([method, dataset, protocol, *flags] + ([settings_text(settings)] if settings else []))


def natural(text: Any) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(text)) if t]


# ---- cells ---------------------------------------------------------------------------------------
@dataclass
class Cell:
    values: list[float]
    failed: int = 0
    suspect: list[Run] = field(default_factory=list)  # the flagged runs among those averaged

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        """The spread over seeds / folds / draws (population std; None for fewer than 2 runs)."""
        return float(np.std(self.values)) if len(self.values) > 1 else None

    def add(self, run: Run, metric: str) -> None:
        """A run's value, or a failure when the run failed or has no finite value."""
        value = run.value(metric) if run.ok else None
        if value is None:
            self.failed += 1
        else:
            self.values.append(value)
            if run.suspect:
                self.suspect.append(run)


def cells(runs: Iterable[Run], metric: str, key=lambda r: r.row) -> dict[Any, dict[str, Cell]]:
    """row → column → Cell."""
    out: dict[Any, dict[str, Cell]] = defaultdict(dict)
    for run in runs:
        out[key(run)].setdefault(run.column, Cell([])).add(run, metric)
    return out


def summary(row_cells: dict[str, Cell]) -> tuple[float | None, float | None, int, int]:
    """(mean of the class means, std over all runs, runs averaged, runs failed)."""
    means = [c.mean for c in row_cells.values() if c.mean is not None]
    every = [v for c in row_cells.values() for v in c.values]
    failed = sum(c.failed for c in row_cells.values())
    return (float(np.mean(means)) if means else None,
            float(np.std(every)) if len(every) > 1 else None, len(every), failed)


def columns_of(runs: Iterable[Run]) -> list[str]:
    return ordered_columns(runs)


def protocol_group(run: Run) -> tuple:
    """Dataset × protocol × its differing protocol settings: one table, compare table and set of
    plots. A reproduced table's run: dataset × protocol × its table and budget × the grid keys of
    its row (GPND's outlier share), never a setting that one of its variants carries (a method's
    own val_fraction in a benchmark)."""
    method, dataset, protocol, flags, settings = run.row
    table = (run.reproduce or {}).get("table")
    if table:
        cell = (run.reproduce or {}).get("cell") or {}
        grid = tuple(sorted((k, _hashable(v)) for k, v in cell.items()
                            if k != "variant" and k not in CELL_SWEPT | CELL_CLASS))
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


def group_title(group: tuple) -> str:
    dataset, protocol, settings = group
    return " · ".join([dataset, protocol] + ([settings_text(settings)] if settings else []))


# ---- ours against the paper ----------------------------------------------------------------------
# reproduce.cell keys: repetitions (averaged within a cell), classes (the columns), the rest (rows)
CELL_SWEPT = {"seed", "protocol.seed", "protocol.fold", "protocol.draw", "fold", "draw"}
# the class keys make the columns; the number of drawn objects (COIL-100's protocol.n_normal) is a
# row: 1, 4 and 7 objects are different experiments, never averaged together
CELL_CLASS = {"protocol.normal", "protocol.anomalous", "normal", "anomalous"}


@dataclass
class Comparison:
    """Ours (mean, spread over seeds / folds / draws, runs), the paper's number and Δ."""
    ours: float | None
    spread: float | None
    n: int
    paper: float | None
    failed: int = 0
    suspect: list[Run] = field(default_factory=list)  # a class cell's flagged runs (a mean's: none)
    # a mean of ours over fewer classes than the paper's mean covers ("1 of 10 classes"): shown
    # beside the paper's number, never set against it (no Δ)
    partial: str | None = None

    @property
    def delta(self) -> float | None:
        if self.partial or self.ours is None or self.paper is None:
            return None
        return self.ours - self.paper

    @property
    def mark(self) -> str:
        """"below": ours below the paper by more than our spread; "no spread": ours below the
        paper but from one run per cell (one fold / seed / draw: nothing to judge the shortfall
        by); else ""."""
        if self.delta is None or self.delta >= 0:
            return ""
        if self.spread is None:
            return "no spread"
        return "below" if -self.delta > self.spread else ""


def compare_cell(runs: Sequence[Run], metric: str, paper: float | None) -> Comparison:
    cell = Cell([])
    for run in runs:
        cell.add(run, metric)
    return Comparison(cell.mean, cell.std, cell.n, paper, cell.failed, cell.suspect)


def compare_mean(cell_runs: Sequence[Sequence[Run]], metric: str, paper: float | None) -> Comparison:
    """The mean over cells (each cell's mean first). Spread: the std over repetitions (seed /
    fold / draw) of the mean over the cells, from the repetitions that ran every cell; else the
    pooled std within cells; none ("no spread") when every cell has one run."""
    cells_ = []
    for runs in cell_runs:
        cell = Cell([])
        for run in runs:
            cell.add(run, metric)
        cells_.append((cell, runs))
    used = [(c, runs) for c, runs in cells_ if c.mean is not None]
    failed = sum(c.failed for c, _ in cells_)
    if not used:
        return Comparison(None, None, 0, paper, failed)
    per_rep: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, (_, runs) in enumerate(used):
        for run in runs:
            value = run.value(metric) if run.ok else None
            if value is not None:
                per_rep[tuple(sorted(run.repetition.items(), key=str))][i].append(value)
    complete = [np.mean([np.mean(v) for v in by_cell.values()]) for by_cell in per_rep.values()
                if len(by_cell) == len(used)]
    variances = [float(np.var(c.values)) for c, _ in used if c.n > 1]
    spread = (float(np.std(complete)) if len(complete) > 1
              else float(np.sqrt(np.mean(variances))) if variances else None)
    # a mean over a flagged (suspect or stale) cell is marked too: a compact table may show it alone
    flagged = [r for c, _ in used for r in c.suspect]
    return Comparison(float(np.mean([c.mean for c, _ in used])), spread, sum(c.n for c, _ in used), paper, failed,
                      flagged)


@dataclass
class PaperRow:
    """A row of a reproduced table: the cells that share the values of the cell keys other than
    the classes and the repetitions (e.g. one outlier ratio); `cells`: class column → runs."""
    label: str
    cells: dict[str, list[Run]]
    settings: tuple = ()  # the cell keys' (key, value) pairs the label names

    def per_class(self, metric: str) -> dict[str, float | None]:
        """The paper's number for each class cell of the row (None: it has none)."""
        return {c: next((v for r in runs if (v := r.paper_value(metric)) is not None), None)
                for c, runs in self.cells.items()}


@dataclass
class PaperTable:
    """A reproduced table (`reproduce.table`) at one budget (and flags), split further by any
    setting that differs among the runs of one cell; rows × class columns, as `PaperRow`s."""
    table: str
    budget: str | None
    flags: tuple[str, ...]
    split: tuple
    rows: list[PaperRow]

    @property
    def runs(self) -> list[Run]:
        return [r for row in self.rows for runs in row.cells.values() for r in runs]

    @property
    def title(self) -> str:
        parts = [self.table, f"budget {self.budget}" if self.budget else "no budget", *self.flags]
        schedule, limits = shared_schedule(self.runs), data_limits(self.runs)
        return " · ".join(parts + ([settings_text(self.split)] if self.split else [])
                          + [x for x in (schedule, limits) if x])

    @property
    def columns(self) -> list[str]:
        return sorted({c for row in self.rows for c in row.cells}, key=natural)

    def metrics(self) -> list[str]:
        """The metrics the paper gives numbers for (the table's own metric first)."""
        names: list[str] = []
        for run in self.runs:
            info = run.reproduce or {}
            names += [str(info["metric"])] if info.get("metric") else []
            for part in ("paper", "paper_mean"):
                names += [k for k, v in (info.get(part) or {}).items() if isinstance(v, (int, float))]
        with_paper = [m for m in dict.fromkeys(names) if self.has_paper(m)]
        # a table without published numbers still shows ours in its own metric (paper: —)
        return with_paper or list(dict.fromkeys(names))[:1]

    def has_paper(self, metric: str) -> bool:
        return self.published_mean(metric) is not None or any(r.paper_value(metric) is not None for r in self.runs)

    def published_mean(self, metric: str) -> float | None:
        """The paper's own mean over the table (`reproduce.paper_mean`)."""
        return next((v for r in self.runs if (v := r.paper_mean(metric)) is not None), None)

    def n_cells(self) -> int:
        return len({_cell_of(r) for r in self.runs})

    def rows_only(self, metric: str) -> bool:
        """Whether the paper's numbers are for whole rows: every row's classes share one number
        (a `where` that names no class: the paper's mean over them), in a table with a row of
        several classes. Its class cells are then left without a paper number (the number is not
        theirs) and each row's mean is set against it."""
        config = table_config(self.table)
        keys = {metric, *(r.metric_key(metric) for r in self.runs)}  # f1_paper: the F1 the paper reports
        entries = [e for e in (config.paper if config is not None else []) if keys & set(e)]
        if entries:  # the table says it: no published number of this metric names a class
            return not any(k in CELL_CLASS for e in entries for k in (e.get("where") or {}))
        numbered = [list(row.per_class(metric).values()) for row in self.rows]
        numbered = [values for values in numbered if any(v is not None for v in values)]
        return (bool(numbered) and any(len(row.cells) > 1 for row in self.rows)
                and all(None not in values and len(set(values)) == 1 for values in numbered))

    def row_paper(self, row: PaperRow, metric: str) -> tuple[dict[str, float | None], float | None]:
        """(the paper's number per class, its number for the row as a whole)."""
        per_class = row.per_class(metric)
        if self.rows_only(metric):
            values = [v for v in per_class.values() if v is not None]
            return dict.fromkeys(per_class), (values[0] if values else None)
        return per_class, None

    def lines(self, metric: str) -> list[tuple[str, str, Comparison]]:
        """(row label, column or "mean" / "all", comparison) for every class cell, each row's
        mean and, for a table of several rows with a published mean, the mean over all cells.
        A row's mean is set against the paper's number for the row, or its published mean (a
        table of one row), or else the mean of the paper's numbers over the cells that have one
        (ours then over the same cells)."""
        out = []
        published = self.published_mean(metric)
        for row in self.rows:
            per_class, row_number = self.row_paper(row, metric)
            columns = sorted(row.cells, key=natural)
            for column in columns:
                out.append((row.label, column, compare_cell(row.cells[column], metric, per_class[column])))
            if row_number is not None or (published is not None and len(self.rows) == 1):
                # the paper's mean over the grid's classes: ours only where it covers them all
                mean = compare_mean([row.cells[c] for c in columns], metric,
                                    row_number if row_number is not None else published)
                mean.partial = self.partial(row, metric)
            else:
                both = [c for c in columns if per_class[c] is not None
                        and compare_cell(row.cells[c], metric, None).ours is not None]
                paper = float(np.mean([per_class[c] for c in both])) if both else None
                mean = compare_mean([row.cells[c] for c in (both or columns)], metric, paper)
            out.append((row.label, "mean", mean))
        if published is not None and len(self.rows) > 1:
            every = compare_mean([runs for row in self.rows for runs in row.cells.values()], metric, published)
            every.partial = next(filter(None, (self.partial(row, metric) for row in self.rows)), None)
            out.append(("", "all", every))
        return out

    def why_no_delta(self, metric: str) -> str | None:
        """Why no line of the table is set against the paper (None where one is): the table has
        no published numbers (its config says why), they are for cells not run here (another
        variant), or ours covers fewer classes than the paper's means."""
        lines = self.lines(metric)
        if any(c.delta is not None for _, _, c in lines):
            return None
        config = table_config(self.table)
        if config is not None and config.variants_from is not None:
            return "a benchmark of every method: its leaderboard ranks them (the field's means beside it)"
        if config is not None and not config.paper and not config.paper_mean:
            return config.no_paper or "no published numbers for this table"
        partial = next((c.partial for _, _, c in lines if c.partial), None)
        if partial:
            return f"ours covers {partial} of the paper's means"
        if config is not None:
            variants = sorted({str(e["where"]["variant"]) for e in config.paper if "variant" in (e.get("where") or {})})
            if variants:
                return f"the paper's numbers are for {', '.join(variants)}, not run here"
        return "no published number for the cells run here"

    def grid_classes(self) -> int | None:
        """How many classes the table's grid holds (what the paper's means are over); None where
        its classes are drawn, not listed (COIL-100), or the table is unknown."""
        config = table_config(self.table)
        counts = [len(v) for k, v in (config.grid.items() if config is not None else ()) if k in CELL_CLASS]
        return int(np.prod(counts)) if counts else None

    def partial(self, row: PaperRow, metric: str) -> str | None:
        """'k of n classes' where ours covers fewer of the grid's classes than the paper's mean."""
        expected = self.grid_classes()
        covered = sum(compare_cell(runs, metric, None).ours is not None for runs in row.cells.values())
        return f"{covered} of {expected} classes" if expected and covered < expected else None

    def row_level(self, row: PaperRow) -> bool:
        """Whether the paper has numbers for this row only as a whole (or none): its class lines
        then add nothing to a compact table."""
        return len(row.cells) == 1 or all(
            self.rows_only(m) or not any(v is not None for v in row.per_class(m).values()) for m in self.metrics())

    def commands(self) -> list[str]:
        return list(dict.fromkeys(r.command for r in self.runs if r.command))

    def sources(self) -> list[str]:
        return list(dict.fromkeys(str(r.reproduce.get("paper_source")) for r in self.runs
                                  if r.reproduce and r.reproduce.get("paper_source")))

    def references(self) -> list[dict]:
        """Other published numbers for this table (`references` in conf/table/<table>.yaml, read
        at report time, so results written before an entry was added show it too)."""
        return table_references(self.table)

    def trained_in(self) -> list[str]:
        return list(dict.fromkeys(str(r.reproduce.get("trained_in")) for r in self.runs
                                  if r.reproduce and r.reproduce.get("trained_in")))


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


def _cell_of(run: Run) -> tuple:
    cell = (run.reproduce or {}).get("cell") or {}
    return tuple(sorted((str(k), _hashable(v)) for k, v in cell.items())) if isinstance(cell, dict) else ()


def _row_of(run: Run) -> tuple:
    return tuple((k, v) for k, v in _cell_of(run) if k not in CELL_SWEPT | CELL_CLASS)


def _with_schedule(label: str, cells_: dict[str, list[Run]], uniform: str | None) -> str:
    """A row's label with its schedule where the table's rows do not share one (a table that
    does says it once, in its title)."""
    if uniform is not None or not any(r.schedule for runs in cells_.values() for r in runs):
        return label
    own = shared_schedule(r for runs in cells_.values() for r in runs) or "mixed schedules"
    return " · ".join(filter(None, [label, own]))


def paper_tables(runs: Sequence[Run]) -> list[PaperTable]:
    """The runs that carry `reproduce`, by table × budget × flags (× any setting that differs
    among the runs of one cell); rows by the cell keys other than classes and repetitions,
    columns the classes."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.reproduce and run.reproduce.get("table"):
            groups[(str(run.reproduce["table"]), run.budget, run.flags)].append(run)
    tables = []
    for (table, budget, flags), members in groups.items():
        by_cell: dict[tuple, list[Run]] = defaultdict(list)
        for run in members:
            by_cell[(_row_of(run), run.column)].append(run)
        # a setting that differs only from cell to cell is the cells' own (a variant's method, an
        # outlier ratio); one that differs among the runs of a cell must not be averaged over
        keys = sorted({k for cell_runs in by_cell.values() for k in split_keys(cell_runs)})
        by_split: dict[tuple, dict[tuple, dict[str, list[Run]]]] = defaultdict(lambda: defaultdict(dict))
        for run in members:
            by_split[split_values(run, members, keys)][_row_of(run)].setdefault(run.column, []).append(run)
        for split, rows in by_split.items():
            uniform = shared_schedule(r for cells_ in rows.values() for runs in cells_.values() for r in runs)
            paper_rows = [PaperRow(_with_schedule(settings_text(row), cells_, uniform), cells_, row)
                          for row, cells_ in rows.items()]
            paper_rows.sort(key=lambda r: natural(r.label))
            tables.append(PaperTable(table, budget, flags, split, paper_rows))
    return sorted(tables, key=lambda t: (t.table, str(t.budget), t.flags, str(t.split)))

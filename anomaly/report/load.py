"""Load: results.json files → `Run`s, and which of them a report counts.

A run's settings are results.json's `config` (the resolved run config; older files:
`method_settings` and `protocol`), less the repetitions (`SWEPT_KEYS`), the classes (`CLASS_KEYS`)
and bookkeeping (`IGNORED_KEYS`: where it ran and wrote, not what it measured). Smoke / debug runs
(`debug`, or `trainer.fast_dev_run` / `limit_*_batches` in older files) and re-scores (`run_kind:
rescore`; older files: `threshold_refit`) are left out unless asked for (`select_runs`).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from anomaly.evaluation.suspect import recorded_flags
from anomaly.plots import protocol_classes
from anomaly.provenance import schedule_text
from anomaly.report import table_conf
from anomaly.report.metrics import paper_number


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


def is_ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def allowed_metrics(runs: Iterable[Run] = ()) -> list[str]:
    """The metrics a table can be made of: those the runs recorded, and `f1_paper` (the F1 the
    protocol's paper reports: `f1` or `f1_inlier`) where they recorded an F1."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.metrics if k not in names]
    return names + (["f1_paper"] if {"f1", "f1_inlier"} & set(names) else [])


def check_metrics(metrics: Sequence[str], runs: Sequence[Run] = ()) -> None:
    """Refuse a metric no run recorded (nothing to check where no run recorded any)."""
    allowed = allowed_metrics(runs)
    for metric in metrics:
        if allowed and metric not in allowed:
            raise ReportError(f"--metric {metric}: not a metric; choose from {', '.join(allowed)}")


@dataclass
class Run:
    """One results.json. `reproduce` (runs of `python -m anomaly.reproduce`): {table, cell: {grid
    key: value}, paper, paper_mean, metric, paper_source, trained_in}; `row`: set by the grouping."""
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
    # the images each split held (results.json split_sizes: train, val, test, *_anomalies) and
    # their fingerprints (data_fingerprint: which images), where recorded
    split_sizes: dict | None = None
    data_fingerprint: dict | None = None

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
        paper = table_conf.published_now(self.reproduce) or (self.reproduce or {}).get("paper") or {}
        return paper_number(paper, metric, self.metric_key(metric))

    def paper_mean(self, metric: str) -> float | None:
        """The paper's own mean over the table, when `reproduce.paper_mean` gives one."""
        mean = (self.reproduce or {}).get("paper_mean")
        return paper_number(mean, metric, self.metric_key(metric)) if isinstance(mean, dict) else None


def hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
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
            out[name] = hashable(value)
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
               cost=data.get("cost") if isinstance(data.get("cost"), dict) else None,
               split_sizes=data.get("split_sizes") if isinstance(data.get("split_sizes"), dict) else None,
               data_fingerprint=data.get("data_fingerprint") if isinstance(data.get("data_fingerprint"), dict) else None)


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

"""What a run was, for its results.json: the config that decides its numbers, whether it was a
smoke/debug run, the command that makes it again, and which paper's settings it ran with.

The report reads these to never average runs that differ in anything but the swept keys, and
to leave smoke runs and re-scores out of paper tables.
"""

from __future__ import annotations

import functools
import logging
import shlex
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anomaly.net_identity import flat_method

log = logging.getLogger("anomaly")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# the trainer settings that change what a run computes (the rest is hardware and bookkeeping)
SCHEDULE_KEYS = ("max_epochs", "max_steps", "limit_train_batches", "limit_val_batches",
                 "limit_test_batches", "fast_dev_run", "precision", "accumulate_grad_batches")
# (compute: a compute budget, anomaly.cost; absent from runs without one)
RESULT_KEYS = ("seed", "dataset", "protocol", "method", "data", "threshold", "compute")


def schedule(cfg: DictConfig) -> dict[str, Any]:
    """The trainer's schedule settings (resolved; absent ones left out)."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    return {k: trainer[k] for k in SCHEDULE_KEYS if k in trainer}


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved settings that decide a run's numbers: seed, dataset (not where its files
    lie), protocol, method (its networks as `anomaly.net_identity` writes them), data, threshold,
    the trainer's schedule and the topology."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keep = {k: resolved[k] for k in RESULT_KEYS if k in resolved}
    keep.get("dataset", {}).get("loader", {}).pop("root", None)
    keep.get("data", {}).pop("images_on_device", None)  # where batches are sliced, not what they hold
    if isinstance(keep.get("method"), dict):  # default nets as the flat keys they were (anomaly.net_identity)
        keep["method"] = flat_method(keep["method"])
    keep["trainer"] = schedule(cfg)
    keep["topology"] = topology(cfg)
    return keep


def topology(cfg: DictConfig) -> dict[str, Any]:
    """The processes a run trains in: `world_size` (devices × nodes); with more than one, the
    strategy and whether BatchNorm statistics are synchronised. Part of what a run is: a 4-GPU
    DDP run takes 4× the effective batch, ¼ of the steps and SyncBatchNorm, so it is not the
    1-GPU run (another config hash, report row and resume). Read from the config before any
    Trainer exists; "all devices" (devices=-1 / auto) counts the GPUs visible here."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    size = device_count(trainer.get("accelerator", "auto"), trainer.get("devices", "auto")) * \
        max(1, int(trainer.get("num_nodes") or 1))
    if size == 1:
        return {"world_size": 1}
    return {"world_size": size, "strategy": str(trainer.get("strategy", "auto")),
            "sync_batchnorm": bool(trainer.get("sync_batchnorm", False))}


def device_count(accelerator: Any, devices: Any) -> int:
    """How many devices Lightning's `devices` setting asks for, on this machine."""
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:  # "0,1": device indices
            return len([d for d in text.split(",") if d.strip()])
        devices = int(text) if text.lstrip("-").isdigit() else text
    if isinstance(devices, (list, tuple)):
        return max(1, len(devices))
    if isinstance(devices, int) and devices > 0:
        return devices
    # -1 or "auto": every visible GPU for a GPU accelerator, one process on the CPU
    if str(accelerator).lower() in ("gpu", "cuda", "auto"):
        import torch

        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    return 1


def debug_label(cfg: DictConfig) -> str | None:
    """Why a run is a smoke/debug run (fast_dev_run, limited batches, a debug= config), or None."""
    reasons = []
    debug = choice("debug")
    if debug:
        reasons.append(f"debug={debug}")
    plan = schedule(cfg)
    if plan.get("fast_dev_run") not in (None, False, 0):
        reasons.append(f"trainer.fast_dev_run={plan['fast_dev_run']}")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = plan.get(key)
        # an int is a number of batches (1 = one batch); a float a share (1.0 = all of them)
        if value is not None and (isinstance(value, int) and not isinstance(value, bool) or value != 1.0):
            reasons.append(f"trainer.{key}={value}")
    return ", ".join(dict.fromkeys(reasons)) or None


def command(cfg: DictConfig, entry: str = "anomaly.train") -> str | None:
    """The command that makes this run again: `cfg.command` where a caller set one
    (anomaly.reproduce), else this job's command-line overrides (one job of a sweep: its own)."""
    if cfg.get("command"):
        return str(cfg.command)
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - composed outside a Hydra app (tests, notebooks)
        return None
    return " ".join(["python", "-m", entry, *(shlex.quote(o) for o in portable_words(overrides))])


def choice(group: str) -> str | None:
    """The option Hydra chose for a config group (None outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except Exception:  # noqa: BLE001 - composed outside a Hydra app
        return None


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def schedule_text(summary: dict) -> str | None:
    """'6/80 ep': the epochs a run trained against its paper's schedule (conf/paper's
    trainer.max_epochs for the method × dataset); '20 ep' where no paper gives one; None where
    the run records no epochs."""
    epochs = summary.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        return None
    paper = ((summary.get("paper_settings") or {}).get("keys") or {}).get("trainer.max_epochs")
    return f"{epochs}/{paper} ep" if isinstance(paper, int) else f"{epochs} ep"


SPLIT_WORDS = {"train": "training images", "test": "test images", "all": "images"}


def subset_line(size: dict | None) -> str | None:
    """The parts of a dataset's recorded `dataset_size` that hold fewer images than its release,
    as one phrase ('10,000 of the official 60,000 training images'); None where every part is
    whole or the release's counts are unknown."""
    official = (size or {}).get("official") or {}
    parts = [f"{size[k]:,} of the official {n:,} {SPLIT_WORDS.get(k, k)}" for k, n in official.items()
             if isinstance(size.get(k), int) and size[k] < n]
    return "; ".join(parts) or None


def config_differences(kept: dict[str, Any], now: dict[str, Any], limit: int = 4) -> list[str]:
    """The keys whose values differ between two result configs (`result_config`), as
    'key: kept → now' (at most `limit`, then '… and N more keys'). Differences that change no
    number are not differences: a class moved into a submodule of the package it was named
    from (`_target_`), a setting added or removed with a null value (the option off: what ran
    before it existed), and a one-process topology (left out of the hash too)."""
    a, b = _flatten(_comparable(kept)), _flatten(_comparable(now))
    keys = [k for k in dict.fromkeys([*a, *b]) if not _same(k, a.get(k, _ABSENT), b.get(k, _ABSENT))]
    shown = [f"{k}: {_value(a.get(k, _ABSENT))} → {_value(b.get(k, _ABSENT))}" for k in keys[:limit]]
    if len(keys) > limit:
        shown.append(f"… and {len(keys) - limit} more keys")
    return shown


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    if (config.get("topology") or {}).get("world_size", 1) == 1:
        config.pop("topology", None)
    return config


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b or {type(a), type(b)} <= {type(None), type(_ABSENT)}:
        return True
    if key.endswith("_target_") and isinstance(a, str) and isinstance(b, str):
        (pa, _, ca), (pb, _, cb) = a.rpartition("."), b.rpartition(".")
        return ca == cb and (pa.startswith(pb + ".") or pb.startswith(pa + "."))
    return False


_ABSENT = object()
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def data_differences(kept: dict | None, now: dict | None) -> list[str]:
    """The splits whose images differ between two data fingerprints (anomaly.data.fingerprint),
    as 'training images', 'test images'…; [] when they match; ['data not fingerprinted'] when
    one side has none."""
    if not kept or not now:
        return ["data not fingerprinted"]
    return [f"{name} images" for part, name in SPLIT_NAMES.items() if kept.get(part) != now.get(part)]


def _value(value: Any) -> str:
    return "(absent)" if value is _ABSENT else str(value)


# overrides that say where a run ran, not what it is: never part of a kept command (they live in
# the environment or the defaults, and are recorded beside the command: `command_paths`)
LOCAL_OVERRIDES = ("paths.", "hydra.", "hydra/", "jobs=", "jobs_per_gpu=", "results_dir=", "rerun=",
                   "trainer.enable_progress_bar=", "print_config=")


def portable_words(words: list[str]) -> list[str]:
    """A command's words without the machine's own settings (paths, the fan-out's job keys)."""
    return [w for w in words if not w.lstrip("+~").startswith(LOCAL_OVERRIDES)]


def cpu_command(command: str | None) -> str | None:
    """The same cell on a CPU, for a command that chose a GPU trainer (None: it runs on a CPU)."""
    if not command:
        return None
    words = shlex.split(command)
    chosen = [w for w in words if w.startswith("trainer=") and w not in ("trainer=cpu", "trainer=default")]
    if not chosen:
        return None
    return " ".join(shlex.quote("trainer=cpu" if w in chosen else w) for w in words)


def command_paths(cfg: DictConfig) -> dict[str, str | None]:
    """Where the run read its data and wrote its runs (beside the command, never in it)."""
    return {"data_dir": OmegaConf.select(cfg, "paths.data_dir", default=None),
            "log_dir": OmegaConf.select(cfg, "paths.log_dir", default=None)}


def paper_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """The published settings applied to this method × dataset pair (conf/paper/), as
    {name, source, keys: {key: published value}, overridden: {key: value used}}, or None. An
    experiment that trains another model of the paper on those settings names it (`model`) and
    gives that model's own published values (`published`, e.g. its schedule), which replace the
    paper file's."""
    info = cfg.get("paper_settings")
    if not info:
        return None
    path = CONF_DIR / "paper" / f"{info.name}.yaml"
    published = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}
    published.pop("defaults", None)
    published.pop("paper_settings", None)
    keys = _flatten(published)
    if info.get("published"):
        keys.update(_flatten(OmegaConf.to_container(info.published, resolve=True)))
    overridden = {}
    for key, value in keys.items():
        used = OmegaConf.select(cfg, key, default=None)
        used = OmegaConf.to_container(used, resolve=True) if OmegaConf.is_config(used) else used
        if used != value:
            overridden[key] = used
    return {"name": str(info.name), "source": str(info.get("source", "")), "keys": keys,
            "overridden": overridden, **({"model": str(info.model)} if info.get("model") else {})}


def paper_line(info: dict[str, Any] | None) -> str | None:
    """One line: which paper's settings applied, the keys they set, and which you overrode."""
    if not info:
        return None
    kept = [f"{k}={v}" for k, v in info["keys"].items() if k not in info["overridden"]]
    line = f"paper settings: {info['source']} (conf/paper/{info['name']}.yaml): {', '.join(kept)}"
    if info["overridden"]:
        line += "; overridden: " + ", ".join(f"{k}={v}" for k, v in info["overridden"].items())
    if info.get("model"):  # an experiment that trains another model of the paper on these settings
        line += f"; this run trains {info['model']}"
    return line


def record(cfg: DictConfig, run_kind: str = "train", entry: str = "anomaly.train") -> dict[str, Any]:
    """The results.json fields that say what the run was."""
    made_by = command(cfg, entry)
    return {"run_kind": run_kind, "debug": debug_label(cfg), "budget": cfg.get("budget"),
            "command": made_by, "cpu_command": cpu_command(made_by), "paper_settings": paper_settings(cfg),
            "config": result_config(cfg), "code": code_record(), "command_paths": _paths(cfg)}


def _paths(cfg: DictConfig) -> dict[str, str | None] | None:
    try:
        return command_paths(cfg)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation (a failure record) must not hide the error
        return None


@functools.cache
def code_record() -> dict[str, Any]:
    """The code a run ran: the package version, and where it is a git checkout, the commit and
    whether tracked files other than the kept results (`reproduced/`, which a campaign writes as it
    goes) differed from it (`dirty`). Recorded, never matched: a kept result of
    older code still re-makes from its command (`reproduce --status` says when its method's files
    changed since)."""
    from anomaly import __version__

    out: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None}
    root = CONF_DIR.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return out
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                  "--", ".", ":(exclude)reproduced"],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git here: the version alone
        return out
    out["commit"] = head.stdout.strip()
    out["dirty"] = bool(changed.stdout.strip()) if changed.returncode == 0 else None
    return out

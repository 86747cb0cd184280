"""The results kept in the repository (`reproduced/<table>/<budget>/<cell>/results.json`): what
makes a kept result the result of a command, and how a run's result is kept beside it.

A kept result is the result of its command when the command composes the same run config
(`config_hash`) and draws the same images (`data_fingerprint`, anomaly.data.fingerprint).
Only then may a table run skip it or a training resume for it. Keeping is done under a lock
per training group (two invocations of one table wait for each other instead of racing), and a
kept result of another config or other data is replaced only with `rerun=true`.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from anomaly.provenance import config_differences, data_differences

log = logging.getLogger("anomaly")

# run-local paths that mean nothing in the repository copy
LOCAL_KEYS = ("run_dir", "checkpoint", "resumed_from")
LOCK_DIR = ".locks"  # beside the kept cells; ignored by git


def read(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_kept_ok(data: dict | None) -> bool:
    return data is not None and data.get("status") == "ok" and not data.get("debug")


def config_identity(kept: dict, config: dict, config_hash: str) -> list[str]:
    """What differs between a kept result's run config and this one, as 'key: kept → now'; []
    when they are the same."""
    if kept.get("config_hash") == config_hash:
        return []
    if not kept.get("config"):
        return [f"config hash {kept.get('config_hash')} → {config_hash}"]
    return config_differences(kept["config"], config)  # [] where nothing that changes a number differs


def data_identity(kept: dict, fingerprint: dict) -> list[str]:
    """The splits whose images differ between a kept result and this run's data ('test images');
    [] when it drew the same images."""
    return data_differences(kept.get("data_fingerprint"), fingerprint)


def lock(target: Path, timeout: float = -1):
    """A lock on one training group's kept results (`target`: its first cell's kept folder)."""
    from filelock import FileLock

    path = target.parent / LOCK_DIR / f"{target.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout)


def keep_results(run_dir: Path, target: Path, rerun: bool = False) -> str:
    """Copy the cell's results.json into the results folder kept in the repository (small JSON
    only: no checkpoints, scores or plots; run-local paths dropped), never losing a kept result:

    - a smoke / debug run is never kept;
    - a failed or interrupted run never replaces an ok result;
    - an ok result of the same run config and data with other numbers is kept beside the old
      one (`results.differs-<time>-<id>.json`, which the report does not read) and the
      difference is logged: a result is never silently swapped for another;
    - the same numbers again leave the kept file as it is;
    - a result of another run config or other data replaces it only with `rerun=true` (the
      runner refuses such a cell before training it; this is the last guard).

    Call it holding `lock(target)`. Returns what was done: kept, unchanged, beside, refused or
    replaced."""
    source = run_dir / "results.json"
    if not source.is_file():
        return "refused"
    data = json.loads(source.read_text())
    for key in LOCAL_KEYS:
        data.pop(key, None)
    if isinstance(data.get("reproduce"), dict) and data["reproduce"].get("trained_in"):
        data["reproduce"]["trained_in"] = Path(str(data["reproduce"]["trained_in"])).name
    if data.get("debug"):
        log.warning("not kept in %s: a smoke/debug run (%s)", target, data["debug"])
        return "refused"
    path = target / "results.json"
    old = read(path)
    action = "kept"
    if is_kept_ok(old):
        from anomaly.results import write_json

        if data.get("status") != "ok":
            log.warning("kept the ok result in %s: this run's %s record stays in %s", target,
                        data.get("status"), run_dir)
            return "refused"
        fingerprints = (old.get("data_fingerprint"), data.get("data_fingerprint"))
        same_data = fingerprints == (None, None) or not data_differences(*fingerprints)
        if old.get("config_hash") == data.get("config_hash") and same_data:
            if old.get("metrics") == data.get("metrics"):
                return "unchanged"
            stamp = str(data.get("created", "")).replace(":", "").replace("+0000", "").replace("+00:00", "")
            # a time to the second, and a random part: two runs that end together never collide
            beside = target / f"results.differs-{stamp or 'new'}-{uuid.uuid4().hex[:6]}.json"
            data["differs_from_kept"] = {k: [old["metrics"].get(k), v] for k, v in (data.get("metrics") or {}).items()
                                         if old["metrics"].get(k) != v}
            write_json(beside, data)
            shown = ", ".join(f"{k} {a} → {b}" for k, (a, b) in list(data["differs_from_kept"].items())[:3]
                              if isinstance(a, (int, float)) and isinstance(b, (int, float)))
            log.warning("%s: this run's numbers differ from the kept result of the same config (%s); "
                        "kept as it was, this run beside it: %s", target, shown, beside.name)
            return "beside"
        if not rerun:
            log.warning("%s: kept as it was: it holds a result of another run config or data; rerun=true "
                        "replaces it (this run stays in %s)", target, run_dir)
            return "refused"
        action = "replaced"
        log.info("%s: replaced a result of another run config or data (%s → %s)", target, old.get("config_hash"),
                 data.get("config_hash"))
    from anomaly.results import write_json

    target.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    return action

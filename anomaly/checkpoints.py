"""Checkpoints of `anomaly.train`: loading one safely, finding the one `ckpt_path=last` resumes,
and the bookkeeping of a resumed or interrupted run.

- `load_checkpoint(path)`: tensors and plain containers only (no arbitrary unpickling), with a
  one-line error for a missing or unreadable file.
- `resume_path(cfg, model)`: the checkpoint a run resumes from (`ckpt_path` as given, or the one
  `find_last_checkpoint` finds for `ckpt_path=last`), refused if it is another method's or
  another image size's.
- `mark_resumed`: the failed or interrupted run that a resume finished says so in its results.json.
- `stop_message`: the `error:` line of a run stopped by SIGTERM or SIGINT (what its checkpoint
  keeps, where the same command resumes).

What a checkpoint holds beyond Lightning's own entries (its `anomaly` entry: method, image shape,
run config, config hash, threshold fit record) is written by `AnomalyModule.on_save_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from omegaconf import DictConfig

from anomaly import AnomalyError
from anomaly.methods.base import AnomalyModule, check_checkpoint_identity

log = logging.getLogger("anomaly")


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (tensors and plain containers only; no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise AnomalyError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, refused globals…
        raise AnomalyError(f"ckpt_path={path} is not a readable checkpoint ({load_failure(err)})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise AnomalyError(f"ckpt_path={path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def load_failure(err: BaseException) -> str:
    """Why torch.load refused a file, without torch's advice to load it unsafely (weights_only=
    False would run whatever code the file holds): the unpickler's own reason where it gives one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    if text.startswith("Weights only load failed"):
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text, re.S)
        reason = " ".join(found.group(1).split()) if found else "it holds Python objects a safe load refuses"
        return f"not a checkpoint written by this project: {reason}"
    return text.splitlines()[0] if text else type(err).__name__


def resume_path(cfg: DictConfig, model: AnomalyModule) -> str | None:
    """The checkpoint to resume from: `ckpt_path` as given, or for `ckpt_path=last` the one
    `find_last_checkpoint` finds (None: train from the start)."""
    path = cfg.get("ckpt_path")
    if path in (None, ""):
        return None
    if str(path) == "last":
        found = find_last_checkpoint(cfg, model.config_hash, model.data_fingerprint)
        if found is None:
            log.info("ckpt_path=last: no checkpoint of this run config (hash %s) and data under %s; "
                     "training from the start", model.config_hash, cfg.paths.log_dir)
            return None
        path = str(found)
    if not Path(path).is_file():
        raise AnomalyError(f"ckpt_path={path}: no such file")
    ckpt = load_checkpoint(path)
    check_checkpoint_identity(ckpt, model.name, model.image_shape, path=path)
    differ = data_differences(ckpt.get("anomaly") or {}, model.data_fingerprint)
    if differ:
        raise AnomalyError(f"ckpt_path={path} was trained on other data: its {' and '.join(differ)} images "
                           "differ from this run's (same config, other files?)")
    log.warning("resuming from %s (%d epochs done)", path, epochs_done(ckpt))
    return path


def epochs_done(ckpt: dict) -> int:
    """The epochs a Lightning checkpoint has trained: its fit loop's count of processed epochs
    (`epoch` is the epoch just trained when saved at an epoch's end, but the one after the last
    when saved after fit; `completed` lags at an epoch's end, where the checkpoint is written
    before the loop counts it)."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(ckpt.get("epoch", -1)) + 1


def data_differences(info: dict, wanted: dict | None) -> list[str]:
    """The splits whose images differ between a checkpoint's run and this one ([] where they
    match, or where the checkpoint predates fingerprints: it is taken on its config alone)."""
    from anomaly.provenance import data_differences as differences

    kept = info.get("data_fingerprint")
    if not kept or not wanted:
        return []
    return [d.replace(" images", "") for d in differences(kept, wanted)]


def find_last_checkpoint(cfg: DictConfig, wanted_hash: str | None, wanted_data: dict | None = None) -> Path | None:
    """`ckpt_path=last`: this run dir's checkpoints/last.ckpt (a fixed `hydra.run.dir` or
    `hydra.sweep.dir`: resume in place), else the newest checkpoints/last.ckpt under
    `paths.log_dir` written by a run of the same config hash (seed, dataset, protocol, method,
    data and threshold settings; not the trainer's) on the same images (`wanted_data`: the run's
    data fingerprint). A last.ckpt is written at the end of epochs, and at the end of the run."""
    own = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if own.is_file():
        info = checkpoint_info(own)
        if not info:
            raise AnomalyError(f"ckpt_path=last: {own} is not a readable checkpoint of anomaly.train; "
                               "remove it (the run then starts over) or choose another run dir")
        if info.get("config_hash") != wanted_hash:
            raise AnomalyError(f"ckpt_path=last: {own} is of another run config (hash "
                               f"{info.get('config_hash')}, this run {wanted_hash}); remove it or "
                               "choose another run dir")
        differ = data_differences(info, wanted_data)
        if differ:
            raise AnomalyError(f"ckpt_path=last: {own} was trained on other data (its {' and '.join(differ)} "
                               "images differ); remove it or choose another run dir")
        return own
    return newest_checkpoint(Path(cfg.paths.log_dir), wanted_hash, wanted_data)


def newest_checkpoint(root: Path, wanted_hash: str | None, wanted_data: dict | None = None) -> Path | None:
    """The newest checkpoints/last.ckpt below `root` written by a run of this config hash on the
    same images (one of the same config on other data is passed over, with a line saying so)."""
    if not root.is_dir():
        return None
    candidates = [p for p in root.rglob("last.ckpt") if p.parent.name == "checkpoints"]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        info = checkpoint_info(path)
        if info.get("config_hash") != wanted_hash:
            continue
        differ = data_differences(info, wanted_data)
        if differ:
            log.warning("not resumed from %s: same config, but its %s images differ", path, " and ".join(differ))
            continue
        return path
    return None


def checkpoint_info(path: Path) -> dict:
    """The checkpoint's `anomaly` entry, read memory-mapped (the weights are not read); {} when
    the file is no readable checkpoint (a run killed while writing one, another program's)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is just not a candidate
        log.warning("ckpt_path=last: skipped %s (%s)", path, str(err).strip().splitlines()[0][:200]
                    if str(err).strip() else type(err).__name__)
        return {}
    info = ckpt.get("anomaly") if isinstance(ckpt, dict) else None
    return {**info, "epoch": ckpt.get("epoch"), "epochs_done": epochs_done(ckpt)} if isinstance(info, dict) else {}


def mark_resumed(old_dir: Path, new_dir: Path) -> None:
    """After a resume from another run's checkpoint, that run's results.json (failed or
    interrupted) says where it was finished, and the report leaves it out."""
    path = old_dir / "results.json"
    if old_dir.resolve() == new_dir.resolve() or not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("status") in ("failed", "interrupted"):
        data.update(status="resumed", resumed_in=str(new_dir))
        from anomaly.results import write_json

        write_json(path, data)


RESUME_COMMAND = "the same command with ckpt_path=last"


def stop_message(signal_name: str, where: str, last: Path, max_epochs: int | None,
                 resume_command: str = RESUME_COMMAND) -> str:
    """The one line of a run stopped by a signal: where it stopped (`where`: "after epoch 3", "in
    epoch 4", "after training"), what its checkpoint `last` holds on disk now (epochs counted from
    1), and what `resume_command` does with it. max_epochs: the training's length (-1 or None:
    none), to tell a finished training from one to go on with."""
    head = f"run stopped by {signal_name} {where}"
    done = (checkpoint_info(last).get("epochs_done") or 0) if last.is_file() else 0
    if done < 1:
        return f"{head}; no epoch was kept, so {resume_command} starts over"
    kept = f"{done} epoch{'s' if done != 1 else ''} kept in {last}"
    if max_epochs is not None and 0 < max_epochs <= done:
        return f"{head}: {kept}, the whole training; {resume_command} validates and tests it without training again"
    return f"{head}: {kept}; {resume_command} resumes at epoch {done + 1}"

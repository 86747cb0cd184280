"""Train / evaluate a method on a dataset × protocol from a composed config.

The entry points (`anomaly.train`, `anomaly.evaluate`) only compose the config and call these;
tests call them directly with a config from `hydra.compose`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError, RunInterrupted
from anomaly import config_schema, distributed, runlog
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.loggers import build_loggers, close_loggers, log_artifacts, log_config, run_name, sweep_group
from anomaly.evaluation.thresholds import F1Threshold, Threshold
from anomaly.methods.base import AnomalyModule, check_checkpoint_identity
from anomaly import provenance
from anomaly.results import example_indices, plot_examples, write_results

log = logging.getLogger("anomaly")

# Intended here: batches are scaled in the LightningModule's on_after_batch_transfer (the method
# knows its value range), not in the datamodule.
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
# Under DDP: val/test metrics come from scores gathered over all ranks, so every rank logs the
# same value and syncing them would change nothing.
warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
# DistributedSampler pads validation/test with repeats; the base module drops them by dataset index.
warnings.filterwarnings("ignore", message=".*Using `DistributedSampler` with the dataloaders.*")
# Resuming from another run's checkpoint (ckpt_path=last): that run's checkpoint dir is left as it is.
warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
# Lightning's all_gather calls a torch function that torch deprecated (nothing to do on our side).
warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")


def instantiate(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate that lets our own errors through unwrapped."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None:
            if isinstance(cause, AnomalyError):
                raise cause from None
            cause = cause.__cause__
        raise


def build_datamodule(cfg: DictConfig, split_path: str | Path | None = None) -> AnomalyDataModule:
    return AnomalyDataModule(
        dataset=instantiate(cfg.dataset.loader),
        protocol=instantiate(cfg.protocol),
        image_size=cfg.dataset.get("image_size"),
        resize_mode=cfg.dataset.get("resize_mode", "bilinear"),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.get("eval_batch_size"),
        num_workers=cfg.data.get("num_workers", 0),
        drop_last=cfg.data.get("drop_last", False),
        seed=cfg.seed,
        split_path=split_path,
    )


def build_threshold(cfg: DictConfig) -> Threshold:
    """The threshold rule of cfg.threshold (the `threshold` config group); its settings are
    checked here, so train builds it before any data loads."""
    node = cfg.get("threshold")
    if node is None or "_target_" not in node:
        old = f" (threshold.strategy={node.get('strategy')} is gone)" if node is not None and "strategy" in node else ""
        raise AnomalyError(f"the run config has no threshold rule{old}: choose one with threshold=<name>, "
                           "one of f1, f1_inlier, quantile, contamination_quantile (conf/threshold/)")
    threshold = instantiate(node)
    if not isinstance(threshold, Threshold):
        raise AnomalyError(f"threshold._target_={node._target_} is not an anomaly.evaluation.thresholds.Threshold")
    return threshold


def build_method(cfg: DictConfig, dm: AnomalyDataModule, threshold: Threshold | None = None) -> AnomalyModule:
    """The method of cfg.method for the datamodule's images, with the threshold rule (None: built
    from cfg.threshold)."""
    if threshold is None:
        threshold = build_threshold(cfg)
    try:
        model = instantiate(cfg.method, image_shape=list(dm.image_shape), threshold=threshold)
    except AnomalyError as err:
        # a network that cannot take these images says which sizes it takes; say which method
        # and which images, as the dataset config decides them
        if re.search(r"image|widths", str(err)) and not str(err).startswith("method="):
            shape = "×".join(str(s) for s in dm.image_shape)
            raise AnomalyError(f"method={_method_name(cfg)} ({shape} images of {cfg.dataset.name}): "
                               f"{err}") from None
        raise
    if not isinstance(model, AnomalyModule):
        raise AnomalyError(f"method._target_={cfg.method._target_} is not an AnomalyModule")
    return model


def build_trainer(cfg: DictConfig, with_callbacks: bool = True, with_logger: bool = True,
                  identity: dict | None = None, model: AnomalyModule | None = None) -> L.Trainer:
    """The Trainer of cfg.trainer with cfg.callbacks and cfg.logger. identity: the run's
    {name, group, tags} for loggers that show them (W&B; see `run_identity`). model: the module
    it will fit (its optimisation decides the DDP strategy, see `distributed.strategy_for`)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()
                 if c is not None and "_target_" in c] if with_callbacks else []
    loggers = build_loggers(cfg.get("logger"), identity) if with_logger else []
    distributed.use_job_command()  # DDP ranks re-run this job, not the whole command line
    extra = {}
    strategy = distributed.strategy_for(cfg.trainer.get("strategy"), model)
    if strategy is not None:
        extra["strategy"] = strategy
    try:
        return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
    except InstantiationException as err:
        # Lightning's own check of a trainer setting (accelerator, devices, precision, strategy, an
        # unknown key…) says it in one sentence: that sentence, not a traceback
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)) and str(cause).strip():
            raise config_schema.ConfigError(f"trainer: {str(cause).strip().splitlines()[0]}") from None
        raise


def run_identity(cfg: DictConfig, dm: AnomalyDataModule, model: AnomalyModule) -> dict:
    """Name, sweep group and tags of a run, for experiment trackers."""
    return {"name": run_name(model.name, cfg.dataset.name, dm.protocol, int(cfg.seed),
                             class_names(dm) if dm.split is not None else None),
            "group": sweep_group(cfg.paths.get("log_dir")),
            "tags": [model.name, str(cfg.dataset.name), dm.protocol.name]}


def class_names(dm: AnomalyDataModule) -> list[str]:
    """The split's normal classes by name, as the user writes them (COIL-100: object numbers)."""
    return [str(dm.data.class_names[c]) for c in dm.split.normal_classes]


def config_hash(cfg: DictConfig) -> str:
    """Hash of what determines the result: the settings and the trainer's schedule (max_epochs,
    batch limits, precision: a 1-epoch smoke checkpoint is not the same run as a 3-epoch one);
    paths and run bookkeeping excluded."""
    text = OmegaConf.to_yaml(OmegaConf.create(provenance.result_config(cfg)))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def protocol_summary(dm: AnomalyDataModule) -> dict:
    """The protocol's settings with its resolved normal classes (ids and names)."""
    protocol = dm.protocol.describe()
    # as the user writes them (COIL-100 objects 1, 3, 77: ["1", "3", "77"]), and their positions
    protocol["normal"] = class_names(dm)
    protocol["normal_ids"] = list(dm.split.normal_classes)
    return protocol


def run_summary(cfg: DictConfig, dm: AnomalyDataModule, model: AnomalyModule, **extra: Any) -> dict:
    protocol = protocol_summary(dm)
    status = "ok" if not model.test_problem or model.test_metrics else "invalid_scores"
    return {
        "method": model.name,
        "dataset": cfg.dataset.name,
        "protocol": protocol,
        "seed": int(cfg.seed),
        "status": status,
        "problem": model.test_problem,
        "metrics": model.test_metrics,
        # the rule that fitted the threshold (a fallback's, where the configured one could not)
        "threshold_strategy": model.threshold_fit["used"] or model.threshold_fit["configured"],
        "threshold_fit": dict(model.threshold_fit),
        # what the report tells rows apart by when a sweep varies a method setting
        "method_settings": {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items()
                            if k != "_target_"},
        "split_sizes": dm.split.sizes(),
        "image_shape": list(dm.image_shape),
        "config_hash": config_hash(cfg),
        **extra,
    }


def train(cfg: DictConfig, keep: dict | None = None, extra: dict | None = None) -> dict:
    """Fit, fit the threshold on validation, test, save the checkpoint and the results.

    keep: a dict that receives the trained `model`, its `dm` and `trainer` (anomaly.reproduce
    evaluates further cells with them). extra: more results.json fields."""
    config_schema.check_train(cfg)  # every plain setting, before anything is written or loaded
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Under DDP every rank runs this; only rank 0 writes the run's files (the others were
    # started into the same dir).
    rank_zero = distributed.process_rank() == 0
    if rank_zero:
        print_config_tree(cfg, output_dir / "config_tree.log", echo=cfg.get("print_config", True))
        line = provenance.paper_line(provenance.paper_settings(cfg))
        if line:
            log.info(line)
    threshold = build_threshold(cfg)  # a bad threshold setting fails before any data loads
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, split_path=output_dir / "split.npz" if rank_zero else None)
    dm.prepare_data()
    dm.setup()  # bad classes, ratios and missing files fail here, before any training
    model = build_method(cfg, dm, threshold)
    model.run_config = OmegaConf.to_container(cfg, resolve=False)
    model.config_hash = config_hash(cfg)
    # a checkpoint of another method or image size is refused before any logger starts
    resume = _resume_path(cfg, model)
    with distributed.processes() as trainers:
        trainer = build_trainer(cfg, identity=run_identity(cfg, dm, model), model=model)
        trainers.append(trainer)
        failed = True
        try:
            results = _fit_test_write(cfg, dm, model, trainer, output_dir, resume, extra or {})
            failed = False
            if keep is not None:
                keep.update(model=model, dm=dm, trainer=trainer)
        except BaseException as err:
            # the classes are resolved by now: the failure record (anomaly.sweep) shows the run
            # in the report's column of its class, as a successful run would be
            err.anomaly_protocol = protocol_summary(dm)
            raise
        finally:
            close_loggers(trainer.loggers, failed=failed)
    return results


def _fit_test_write(cfg: DictConfig, dm: AnomalyDataModule, model: AnomalyModule, trainer: L.Trainer,
                    output_dir: Path, resume: str | None, extra: dict) -> dict:
    log_config(trainer.loggers, cfg)
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
    except SIGTERMException:
        # Lightning stops at the end of the batch in progress; the epoch-end last.ckpt stays
        # (a mid-epoch one would not resume to the same result)
        raise RunInterrupted(_interrupted_message(trainer, output_dir)) from None
    except Exception as err:
        # a method's code that failed on a diverged network (see anomaly.callbacks)
        diagnosis = getattr(err, "anomaly_diagnosis", None)
        if diagnosis:
            raise AnomalyError(diagnosis) from err
        raise
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.validate(model, datamodule=dm, verbose=False)  # threshold of the final weights
    validate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.test(model, datamodule=dm, verbose=False)
    score_seconds = time.perf_counter() - start

    ckpt_path = output_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt_path, weights_only=False)  # optimiser state kept: resumable
    if not trainer.is_global_zero:
        return {}
    summary = run_summary(cfg, dm, model, train_seconds=round(train_seconds, 3),
                          validate_seconds=round(validate_seconds, 3),
                          score_seconds=round(score_seconds, 3), epochs=trainer.current_epoch,
                          run_dir=str(output_dir), checkpoint=str(ckpt_path), resumed_from=resume,
                          **provenance.record(cfg), **extra)
    results = write_results(output_dir, summary, model.test_scores, float(model.threshold))
    if resume is not None:
        mark_resumed(Path(resume).parent.parent, output_dir)
    write_examples(output_dir, model, dm)
    log_artifacts(trainer.loggers, results, output_dir, step=trainer.global_step)
    print_results(results)
    return results


def write_examples(output_dir: Path, model: AnomalyModule, dm: AnomalyDataModule) -> None:
    """examples.png: test images the method found most / least anomalous, with reconstructions."""
    if model.test_scores is None or model.test_problem:
        return
    groups = {}
    for name, index in example_indices(model.test_scores).items():
        pair = model.examples(dm.data.images[index])
        if pair is None:
            return
        groups[name] = pair
    if groups:
        plot_examples(groups, output_dir / "examples.png", f"{model.name} · {dm.data.name}")


def _resume_path(cfg: DictConfig, model: AnomalyModule) -> str | None:
    """The checkpoint to resume from: `ckpt_path` as given, or for `ckpt_path=last` the one
    `find_last_checkpoint` finds (None: train from the start)."""
    path = cfg.get("ckpt_path")
    if path in (None, ""):
        return None
    if str(path) == "last":
        found = find_last_checkpoint(cfg, model.config_hash)
        if found is None:
            log.warning("ckpt_path=last: no checkpoint of this run config (hash %s) under %s; "
                        "training from the start", model.config_hash, cfg.paths.log_dir)
            return None
        path = str(found)
    if not Path(path).is_file():
        raise AnomalyError(f"ckpt_path={path}: no such file")
    ckpt = load_checkpoint(path)
    check_checkpoint_identity(ckpt, model.name, model.image_shape, path=path)
    log.warning("resuming from %s (%d epochs done)", path, int(ckpt.get("epoch", -1)) + 1)
    return path


def find_last_checkpoint(cfg: DictConfig, wanted_hash: str | None) -> Path | None:
    """`ckpt_path=last`: this run dir's checkpoints/last.ckpt (a fixed `hydra.run.dir` or
    `hydra.sweep.dir`: resume in place), else the newest checkpoints/last.ckpt under
    `paths.log_dir` written by a run of the same config hash (seed, dataset, protocol, method,
    data and threshold settings; not the trainer's). A last.ckpt is written at the end of every
    epoch, and at the end of the run."""
    own = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if own.is_file():
        info = _checkpoint_info(own)
        if not info:
            raise AnomalyError(f"ckpt_path=last: {own} is not a readable checkpoint of anomaly.train; "
                               "remove it (the run then starts over) or choose another run dir")
        if info.get("config_hash") != wanted_hash:
            raise AnomalyError(f"ckpt_path=last: {own} is of another run config (hash "
                               f"{info.get('config_hash')}, this run {wanted_hash}); remove it or "
                               "choose another run dir")
        return own
    root = Path(cfg.paths.log_dir)
    if not root.is_dir():
        return None
    candidates = [p for p in root.rglob("last.ckpt") if p.parent.name == "checkpoints"]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if _checkpoint_info(path).get("config_hash") == wanted_hash:
            return path
    return None


def _checkpoint_info(path: Path) -> dict:
    """The checkpoint's `anomaly` entry, read memory-mapped (the weights are not read); {} when
    the file is no readable checkpoint (a run killed while writing one, another program's)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is just not a candidate
        log.warning("ckpt_path=last: skipped %s (%s)", path, str(err).strip().splitlines()[0][:200]
                    if str(err).strip() else type(err).__name__)
        return {}
    info = ckpt.get("anomaly") if isinstance(ckpt, dict) else None
    return {**info, "epoch": ckpt.get("epoch")} if isinstance(info, dict) else {}


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
        path.write_text(json.dumps(data, indent=2) + "\n")


def _interrupted_message(trainer: L.Trainer, output_dir: Path) -> str:
    where = f"run interrupted by SIGTERM in epoch {trainer.current_epoch} (global step {trainer.global_step})"
    last = output_dir / "checkpoints" / "last.ckpt"
    epoch = _checkpoint_info(last).get("epoch") if last.is_file() else None
    if epoch is None:
        return f"{where}; no epoch had finished, so the same command with ckpt_path=last starts over"
    return (f"{where}; {last} holds the end of epoch {epoch}: run the same command with "
            "ckpt_path=last to resume from it")


def _method_name(cfg: DictConfig) -> str:
    cls = hydra.utils.get_class(cfg.method._target_)
    return cls.name


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (tensors and plain containers only; no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise AnomalyError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, refused globals…
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AnomalyError(f"ckpt_path={path} is not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise AnomalyError(f"ckpt_path={path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def evaluate(cfg: DictConfig) -> dict:
    """Re-score a checkpoint on its run's test split (same dataset, protocol and seed).

    The checkpoint's threshold is used as saved; `refit_threshold=true` fits it again on the
    validation split. `data_dir=…` points at the data if it moved.
    """
    config_schema.check_evaluate(cfg)
    if not cfg.get("ckpt_path"):
        raise AnomalyError("ckpt_path is required: python -m anomaly.evaluate ckpt_path=…/last.ckpt")
    ckpt = load_checkpoint(cfg.ckpt_path)
    info = ckpt.get("anomaly") or {}
    if not info.get("config"):
        raise AnomalyError(f"ckpt_path={cfg.ckpt_path} has no run config (not written by anomaly.train)")
    run_cfg = OmegaConf.create(info["config"])
    if cfg.get("method") is not None:
        check_checkpoint_identity(ckpt, _method_name(cfg), path=str(cfg.ckpt_path))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_cfg.paths.output_dir = str(output_dir)
    if cfg.get("data_dir"):
        run_cfg.paths.data_dir = str(cfg.data_dir)
    run_cfg.trainer = cfg.trainer

    refit = cfg.get("refit_threshold", False) is True  # a real boolean (config_schema)
    # a refit fits the run config's threshold rule again; otherwise the saved threshold is used
    # as it is, with its fit record. A checkpoint from before the threshold group has no rule to
    # build and needs none (its old threshold.strategy is reported as the configured one).
    legacy = run_cfg.get("threshold") is not None and "_target_" not in run_cfg.threshold
    threshold = F1Threshold() if legacy and not refit else build_threshold(run_cfg)
    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(run_cfg)
    dm.prepare_data()
    dm.setup()
    model = build_method(run_cfg, dm, threshold)
    check_checkpoint_identity(ckpt, model.name, dm.image_shape, path=str(cfg.ckpt_path))
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = info["config"]
    if not refit:
        model.restore_threshold_fit(info.get("threshold_fit") or
                                    ({"configured": run_cfg.threshold.get("strategy")} if legacy else None))
    with distributed.processes() as trainers:
        trainer = build_trainer(run_cfg, with_callbacks=False, with_logger=False)
        trainers.append(trainer)
        if refit:
            trainer.validate(model, datamodule=dm, verbose=False)
        start = time.perf_counter()
        trainer.test(model, datamodule=dm, verbose=False)
        score_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    summary = run_summary(run_cfg, dm, model, score_seconds=round(score_seconds, 3),
                          run_dir=str(output_dir), checkpoint=str(cfg.ckpt_path),
                          threshold_refit=refit,
                          **provenance.record(run_cfg, run_kind="rescore", entry="anomaly.evaluate"))
    results = write_results(output_dir, summary, model.test_scores, float(model.threshold))
    print_results(results)
    return results


def print_config_tree(cfg: DictConfig, save_to: Path | None = None, echo: bool = True) -> None:
    """The composed config as a rich tree: printed if `echo`, saved beside the run and written to
    the run's log (train.log), never cut at the terminal's width (long paths stay whole)."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    order = ["method", "dataset", "protocol", "data", "threshold", "trainer", "callbacks", "logger", "paths"]
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    longest = 0
    for key in keys:
        node = cfg[key]
        try:
            text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        except Exception:  # unresolvable outside a Hydra run
            text = OmegaConf.to_yaml(node) if isinstance(node, DictConfig) else str(node)
        longest = max([longest, *(len(line) for line in text.splitlines())])
        tree.add(key, guide_style="dim").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    width = max(120, longest + 16)  # the tree's guides indent the YAML by 8 characters
    if echo:
        console = Console()
        (console if console.width >= width else Console(width=width)).print(tree)
    text = runlog.render(tree, width)
    if save_to is not None:
        Path(save_to).write_text(text + "\n")
    runlog.to_log(text)


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{results['method']} · {results['dataset']} · {results['protocol']['name']} "
                        # class names, as the user writes them (COIL-100: object numbers, not positions)
                        f"normal {','.join(str(c) for c in results['protocol'].get('normal') or [])} "
                        f"· seed {results['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in (results.get("metrics") or {}).items():
        table.add_row(key, "—" if value is None else f"{value:.4f}")
    lines = [table]
    if results.get("problem"):
        lines.append(f"[yellow]note:[/] {results['problem']}")
    lines.append(f"run dir: {results['run_dir']}")
    console = Console()
    for line in lines:
        console.print(line, soft_wrap=isinstance(line, str))  # a path is never folded
    runlog.to_log("\n".join(runlog.render(line, 10_000 if isinstance(line, str) else 200) for line in lines))


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an AnomalyError as one line and exit 2 (no traceback: the message says it all)."""
    try:
        yield
    except AnomalyError as err:
        runlog.error(str(err))
        sys.exit(2)

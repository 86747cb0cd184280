"""Train a method on a dataset × protocol from a composed config.

The entry point `anomaly.train` only composes the config and calls `train`; tests call it directly
with a config from `hydra.compose`. Here: building the run's parts (`build_*`), `train` and the
run summary that results.json holds. Elsewhere: `anomaly.rescore` (what `anomaly.evaluate` does
with a trained checkpoint), `anomaly.config` (instantiate, config hash), `anomaly.checkpoints`
(loading, resuming), `anomaly.console` (what a run prints), `anomaly.results` (the files a run
writes).
"""

from __future__ import annotations

import logging
import re
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError, RunInterrupted
from anomaly import config_schema, cost, distributed
from anomaly.checkpoints import RESUME_COMMAND, mark_resumed, resume_path, stop_message
from anomaly.config import config_hash, instantiate, method_name
from anomaly.console import print_config_tree, print_results, print_trial, tuning_metric
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.loggers import build_loggers, close_loggers, log_artifacts, log_config, run_name, sweep_group
from anomaly.evaluation.evaluator import Evaluator
from anomaly.evaluation.post_processor import PostProcessor
from anomaly.evaluation.thresholds import Threshold
from anomaly.methods.base import AnomalyModule
from anomaly import provenance
from anomaly.results import example_indices, plot_examples, run_title, write_results
from anomaly.stop_signals import stop_at_once

log = logging.getLogger("anomaly")


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
        images_on_device=cfg.data.get("images_on_device", True),
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


def build_method(cfg: DictConfig, dm: AnomalyDataModule | None, threshold: Threshold | None = None,
                 image_shape: tuple[int, ...] | None = None) -> AnomalyModule:
    """The method of cfg.method for the datamodule's images (or, without a datamodule, images of
    `image_shape`), with its components attached: the post-processor of the threshold rule (None:
    built from cfg.threshold) and the evaluator."""
    if threshold is None:
        threshold = build_threshold(cfg)
    image_shape = tuple(dm.image_shape if dm is not None else image_shape)
    try:
        # not recursive: the method builds the networks its nodes name (anomaly/nets/build.py)
        model = instantiate(cfg.method, image_shape=list(image_shape), _recursive_=False)
    except AnomalyError as err:
        # a network that cannot take these images says which sizes it takes; say which method
        # and which images, as the dataset config decides them
        if re.search(r"image|widths", str(err)) and not str(err).startswith("method="):
            shape = "×".join(str(s) for s in image_shape)
            raise AnomalyError(f"method={method_name(cfg)} ({shape} images of {cfg.dataset.name}): "
                               f"{err}") from None
        raise
    if not isinstance(model, AnomalyModule):
        raise AnomalyError(f"method._target_={cfg.method._target_} is not an AnomalyModule")
    PostProcessor(threshold).attach(model)
    Evaluator().attach(model)
    return model


def build_trainer(cfg: DictConfig, with_callbacks: bool = True, with_logger: bool = True,
                  identity: dict | None = None, model: AnomalyModule | None = None,
                  extra_callbacks: tuple[L.Callback, ...] = ()) -> L.Trainer:
    """The Trainer of cfg.trainer with cfg.callbacks (and `extra_callbacks`) and cfg.logger.
    identity: the run's {name, group, tags} for loggers that show them (W&B; see `run_identity`).
    model: the module it will fit (its optimisation decides the DDP strategy, see
    `distributed.strategy_for`)."""
    callbacks = [*extra_callbacks, *([instantiate(c) for c in (cfg.get("callbacks") or {}).values()
                                      if c is not None and "_target_" in c] if with_callbacks else [])]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
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


def protocol_summary(dm: AnomalyDataModule) -> dict:
    """The protocol's settings with its resolved normal classes (ids and names)."""
    protocol = dm.protocol.describe()
    # as the user writes them (COIL-100 objects 1, 3, 77: ["1", "3", "77"]), and their positions
    protocol["normal"] = class_names(dm)
    protocol["normal_ids"] = list(dm.split.normal_classes)
    return protocol


def run_header(cfg: DictConfig, output_dir: Path) -> str:
    """A run's first line: `train ae on digits · one_class · normal [0] · seed 0 → <run dir>`."""
    protocol = cfg.get("protocol") or {}
    classes = [f"{k} {OmegaConf.to_container(protocol[k]) if OmegaConf.is_config(protocol[k]) else protocol[k]}"
               for k in ("normal", "anomalous", "n_normal") if protocol.get(k) is not None]
    # the run config's own method and protocol (a table cell's may differ from the app's choices)
    method = method_name(cfg)
    protocol_name = str(protocol_class_name(cfg) or provenance.choice("protocol") or "?")
    parts = [f"{method} on {cfg.dataset.name}", protocol_name, *classes, f"seed {cfg.seed}"]
    return f"train {' · '.join(parts)} → {output_dir}"


def protocol_class_name(cfg: DictConfig) -> str | None:
    """The `name` of the protocol class cfg.protocol builds (as the report names protocols)."""
    from hydra.utils import get_class

    target = OmegaConf.select(cfg, "protocol._target_", default=None)
    return getattr(get_class(target), "name", None) if target else None


def run_summary(cfg: DictConfig, dm: AnomalyDataModule, model: AnomalyModule, **extra: Any) -> dict:
    protocol = protocol_summary(dm)
    evaluator, fit = model.evaluator, model.post_processor.fit_record
    status = "ok" if not evaluator.test_problem or evaluator.test_metrics else "invalid_scores"
    return {
        "method": model.name,
        "dataset": cfg.dataset.name,
        "protocol": protocol,
        "seed": int(cfg.seed),
        "status": status,
        "problem": evaluator.test_problem,
        "metrics": evaluator.test_metrics,
        # the validation split's, at the same threshold: what model selection and sweepers may use
        "val_metrics": evaluator.val_metrics,
        # the rule that fitted the threshold (a fallback's, where the configured one could not)
        "threshold_strategy": fit["used"] or fit["configured"],
        "threshold_fit": dict(fit),
        # what the report tells rows apart by when a sweep varies a method setting
        "method_settings": {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items()
                            if k != "_target_"},
        "split_sizes": dm.split.sizes(),
        "train_hash": dm.split.train_hash(),
        # the content of the images each split drew: with the config, what the run is
        "data_fingerprint": dm.fingerprint(),
        # the images this copy of the dataset holds against the release's (MNIST here: a subset)
        "dataset_size": dm.data.size(),
        "image_shape": list(dm.image_shape),
        "config_hash": config_hash(cfg),
        # what the method chose with labelled validation anomalies (None: nothing; ocsvm_tuned: its γ)
        "labelled_selection": model.labelled_selection,
        **extra,
    }


def train(cfg: DictConfig, keep: dict | None = None, extra: dict | None = None,
          resume_command: str = RESUME_COMMAND) -> dict:
    """Fit, fit the threshold on validation, test, save the checkpoint and the results.

    keep: a dict that receives the trained `model`, its `dm` and `trainer` (anomaly.reproduce
    evaluates further cells with them). extra: more results.json fields. resume_command: what
    resumes the run, for the message of a run stopped by a signal (`_fit_test_write`)."""
    config_schema.check_train(cfg)  # every plain setting, before anything is written or loaded
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Under DDP every rank runs this; only rank 0 writes the run's files (the others were
    # started into the same dir).
    rank_zero = distributed.process_rank() == 0
    if rank_zero:  # what runs, with which paper's settings, and where: before anything else
        log.info(run_header(cfg, output_dir))
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
    model.data_fingerprint = dm.fingerprint()
    # a checkpoint of another method, image size or data is refused before any logger starts
    resume = resume_path(cfg, model)
    if rank_zero:  # the whole config: in the run dir, on the terminal with print_config=true (after
        # every refusal of bad input, so that an error is never below a page of config)
        print_config_tree(cfg, output_dir / "config_tree.log", echo=cfg.get("print_config", False))
    plan = cost.plan_for(cfg, model, dm)  # with compute.max_flops: where to stop (None: no budget)
    with distributed.processes() as trainers:
        # every fit counts its cost (and stops at a budget's batch, its schedule shortened first)
        trainer = build_trainer(cfg, identity=run_identity(cfg, dm, model), model=model,
                                extra_callbacks=(cost.TrainingCost(plan),))
        cost.apply_plan(plan, model, trainer)
        trainers.append(trainer)
        failed = True
        try:
            results = _fit_test_write(cfg, dm, model, trainer, output_dir, resume, extra or {}, resume_command)
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
                    output_dir: Path, resume: str | None, extra: dict, resume_command: str) -> dict:
    """Fit, then `_test_write`. SIGTERM or SIGINT ends the run with a `RunInterrupted` that says
    what its checkpoint keeps and what `resume_command` does with it: during training at the end
    of the epoch in progress (the StopAtEpochEnd callback), elsewhere, or at a second signal, at
    once (`stop_at_once`)."""
    log_config(trainer.loggers, cfg)
    last = output_dir / "checkpoints" / "last.ckpt"
    fitted = False
    try:
        with stop_at_once():
            start = time.perf_counter()
            try:
                trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
            except Exception as err:
                # a method's code that failed on a diverged network (see anomaly.callbacks.non_finite)
                diagnosis = getattr(err, "anomaly_diagnosis", None)
                if diagnosis:
                    raise AnomalyError(diagnosis) from err
                raise
            fitted = True  # its last epoch's checkpoint is written (EpochEndCheckpoint)
            # a resumed run's training seconds include those of the fits its checkpoint carries
            train_seconds = time.perf_counter() - start + cost.carried_seconds(trainer)
            return _test_write(cfg, dm, model, trainer, output_dir, resume, extra, train_seconds)
    except (RunInterrupted, SIGTERMException) as stop:
        # SIGTERMException: Lightning's own handler stopped after the batch in progress, where
        # StopAtEpochEnd's was not in place (a run configured without it). StopAtEpochEnd says
        # where it stopped (after an epoch); stopped at once, the run was where it was
        signum = getattr(stop, "signum", signal.SIGTERM)
        where = getattr(stop, "where", None) or ("after training" if fitted else
                                                 f"in epoch {trainer.current_epoch + 1}")
        # a resumed run that trained no further epoch wrote no checkpoint of its own: what it
        # resumed from is what is kept (and what the same command resumes from again)
        kept = last if last.is_file() or not resume else Path(resume)
        raise RunInterrupted(stop_message(signal.Signals(signum).name, where, kept, trainer.max_epochs,
                                          resume_command), signum) from None


def _test_write(cfg: DictConfig, dm: AnomalyDataModule, model: AnomalyModule, trainer: L.Trainer,
                output_dir: Path, resume: str | None, extra: dict, train_seconds: float) -> dict:
    """Fit the threshold on validation, test, save the final checkpoint, write the results."""
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
    spent = cost.spent(trainer, model, cfg, dm, train=train_seconds, validate=validate_seconds, score=score_seconds)
    summary = run_summary(cfg, dm, model, train_seconds=round(train_seconds, 3),
                          validate_seconds=round(validate_seconds, 3),
                          score_seconds=round(score_seconds, 3), epochs=trainer.current_epoch, cost=spent,
                          # where it trained (not part of what the run is: see provenance.topology)
                          accelerator=trainer.strategy.root_device.type, world_size=trainer.world_size,
                          run_dir=str(output_dir), checkpoint=str(ckpt_path), resumed_from=resume,
                          **provenance.record(cfg), **extra)
    plots = bool(cfg.get("plots", True))
    results = write_results(output_dir, summary, model.test_scores, model.post_processor.value, plots=plots)
    if resume is not None:
        mark_resumed(Path(resume).parent.parent, output_dir)
    if plots:
        write_examples(output_dir, model, dm, run_title(results))
    log_artifacts(trainer.loggers, results, output_dir, step=trainer.global_step)
    tuned = tuning_metric()
    if tuned is None:
        print_results(results)
    else:  # a trial of a tuning sweep: its validation number only (SweepSummary shows the best's test)
        print_trial(results, tuned)
    return results


def write_examples(output_dir: Path, model: AnomalyModule, dm: AnomalyDataModule, title: str) -> None:
    """examples.png: the test images the method found most / least anomalous, each with its class
    and score, over their reconstructions where the method has them."""
    scored = model.test_scores
    if scored is None or model.evaluator.test_problem:
        return
    groups = {}
    for name, pos in example_indices(scored).items():
        inputs, recon = model.examples(dm.data.images[scored.index[pos]])
        captions = [f"{dm.data.class_names[int(label)]}\n{float(score):.3g}"
                    for label, score in zip(scored.label[pos], scored.score[pos])]
        groups[name] = (inputs, recon, captions)
    if groups:
        plot_examples(groups, output_dir / "examples.png", f"{title}\n(class, score above each image)")

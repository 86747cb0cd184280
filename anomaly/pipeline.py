"""Train / evaluate a method on a dataset × protocol from a composed config.

The entry points (`anomaly.train`, `anomaly.evaluate`) only compose the config and call these;
tests call them directly with a config from `hydra.compose`.
"""

from __future__ import annotations

import hashlib
import logging
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
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.methods.base import AnomalyModule, check_checkpoint_identity
from anomaly.results import example_indices, plot_examples, write_results

log = logging.getLogger("anomaly")

# Intended here: batches are scaled in the LightningModule's on_after_batch_transfer (the method
# knows its value range), not in the datamodule.
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


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


def build_method(cfg: DictConfig, dm: AnomalyDataModule) -> AnomalyModule:
    threshold = OmegaConf.to_container(cfg.threshold, resolve=True) if cfg.get("threshold") else {}
    if threshold.get("strategy", "auto") == "auto":  # the protocol's paper convention
        threshold["strategy"] = dm.protocol.threshold_strategy
    model = instantiate(cfg.method, image_shape=list(dm.image_shape), threshold=threshold)
    if not isinstance(model, AnomalyModule):
        raise AnomalyError(f"method._target_={cfg.method._target_} is not an AnomalyModule")
    return model


def build_trainer(cfg: DictConfig, with_callbacks: bool = True, with_logger: bool = True) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()
                 if c is not None and "_target_" in c] if with_callbacks else []
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()
               if c is not None and "_target_" in c] if with_logger else []
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def config_hash(cfg: DictConfig) -> str:
    """Hash of what determines the result (paths and run bookkeeping excluded)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keep = {k: resolved[k] for k in ("seed", "dataset", "protocol", "method", "data", "threshold") if k in resolved}
    keep.get("dataset", {}).get("loader", {}).pop("root", None)  # where the files are is not what they are
    text = OmegaConf.to_yaml(OmegaConf.create(keep))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_summary(cfg: DictConfig, dm: AnomalyDataModule, model: AnomalyModule, **extra: Any) -> dict:
    protocol = dm.protocol.describe()
    protocol["normal"] = list(dm.split.normal_classes)
    protocol["normal_names"] = [dm.data.class_names[c] for c in dm.split.normal_classes]
    status = "ok" if not model.test_problem or model.test_metrics else "invalid_scores"
    return {
        "method": model.name,
        "dataset": cfg.dataset.name,
        "protocol": protocol,
        "seed": int(cfg.seed),
        "status": status,
        "problem": model.test_problem,
        "metrics": model.test_metrics,
        "threshold_strategy": model.threshold_strategy,
        "split_sizes": dm.split.sizes(),
        "image_shape": list(dm.image_shape),
        "config_hash": config_hash(cfg),
        **extra,
    }


def train(cfg: DictConfig) -> dict:
    """Fit, fit the threshold on validation, test, save the checkpoint and the results."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, output_dir / "config_tree.log", echo=cfg.get("print_config", True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, split_path=output_dir / "split.npz")
    dm.prepare_data()
    dm.setup()  # bad classes, ratios and missing files fail here, before any training
    model = build_method(cfg, dm)
    model.run_config = OmegaConf.to_container(cfg, resolve=False)
    trainer = build_trainer(cfg)

    start = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=_resume_path(cfg))
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
                          run_dir=str(output_dir), checkpoint=str(ckpt_path))
    results = write_results(output_dir, summary, model.test_scores, float(model.threshold))
    write_examples(output_dir, model, dm)
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


def _resume_path(cfg: DictConfig) -> str | None:
    path = cfg.get("ckpt_path")
    if path in (None, ""):
        return None
    if not Path(path).is_file():
        raise AnomalyError(f"ckpt_path={path}: no such file")
    check_checkpoint_identity(load_checkpoint(path), _method_name(cfg), path=path)
    return path


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

    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(run_cfg)
    dm.prepare_data()
    dm.setup()
    model = build_method(run_cfg, dm)
    check_checkpoint_identity(ckpt, model.name, dm.image_shape, path=str(cfg.ckpt_path))
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = info["config"]
    trainer = build_trainer(run_cfg, with_callbacks=False, with_logger=False)
    if cfg.get("refit_threshold", False):
        trainer.validate(model, datamodule=dm, verbose=False)
    start = time.perf_counter()
    trainer.test(model, datamodule=dm, verbose=False)
    score_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    summary = run_summary(run_cfg, dm, model, score_seconds=round(score_seconds, 3),
                          run_dir=str(output_dir), checkpoint=str(cfg.ckpt_path),
                          threshold_refit=bool(cfg.get("refit_threshold", False)))
    results = write_results(output_dir, summary, model.test_scores, float(model.threshold))
    print_results(results)
    return results


def print_config_tree(cfg: DictConfig, save_to: Path | None = None, echo: bool = True) -> None:
    """The composed config as a rich tree (printed if `echo`, and saved beside the run)."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    order = ["method", "dataset", "protocol", "data", "threshold", "trainer", "callbacks", "logger", "paths"]
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        node = cfg[key]
        try:
            text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        except Exception:  # unresolvable outside a Hydra run
            text = OmegaConf.to_yaml(node) if isinstance(node, DictConfig) else str(node)
        tree.add(key, guide_style="dim").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    if echo:
        Console().print(tree)
    if save_to is not None:
        with open(save_to, "w") as fh:
            Console(file=fh, width=120, color_system=None).print(tree)


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{results['method']} · {results['dataset']} · {results['protocol']['name']} "
                        f"normal={results['protocol'].get('normal')} · seed {results['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in (results.get("metrics") or {}).items():
        table.add_row(key, "—" if value is None else f"{value:.4f}")
    console = Console()
    console.print(table)
    if results.get("problem"):
        console.print(f"[yellow]note:[/] {results['problem']}")
    console.print(f"run dir: {results['run_dir']}")


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an AnomalyError as one line and exit 2 (no traceback: the message says it all)."""
    try:
        yield
    except AnomalyError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)

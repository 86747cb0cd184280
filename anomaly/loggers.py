"""Experiment loggers: building them from `cfg.logger`, and what a run logs beyond Lightning's
`self.log` calls (the resolved config, the result plots, the final summary).

Lightning already sends `train/*` (per step), `val/*` (per epoch) and `test/*` (the final metrics)
to every logger. Here:

- `build_loggers`: instantiates `cfg.logger`; a W&B logger gets its run name, sweep group and
  tags from the run itself (method, dataset, protocol, classes, fold, seed) where the config
  leaves them null, and an unusable W&B set-up (no API key…) fails before training, in one line.
- `log_config`: the resolved config as hyperparameters (W&B config, CSV/TensorBoard hparams).
- `log_artifacts`: after the results are written, the PNGs (examples, ROC, score histogram) as
  images wherever a logger takes images (W&B, TensorBoard), and the run's status and timings in
  the W&B summary.
- `close_loggers`: ends the W&B run, so that the next job of a sweep (same process) starts its own.
- `log_comparison`: a reproduced table's ours | paper | Δ and its figures, in a W&B run of the
  table's group (`anomaly.reproduce` with `logger=wandb`): the dashboard shows what the README does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError
from anomaly.config import instantiate

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"
# result PNG -> image key (results.py and pipeline.write_examples write them)
IMAGES = {"examples.png": "test/examples", "roc.png": "test/roc", "score_hist.png": "test/score_hist"}
# results.json fields that go into the W&B run summary (metrics are there already, as test/*)
SUMMARY_KEYS = ("status", "problem", "threshold_strategy", "train_seconds", "validate_seconds",
                "score_seconds", "epochs", "config_hash", "run_dir")


def _token(value: Any) -> str:
    """A class id or name as it can stand in a run name ("T-shirt/top" -> "T-shirttop")."""
    return re.sub(r"[^\w.-]+", "", str(value))


def run_name(method: str, dataset: str, protocol: Any, seed: int,
             normal_classes: Sequence[int] | None = None) -> str:
    """<method>-<dataset>-<protocol>-<classes>[-f<fold>][-d<draw>]-s<seed>, e.g.
    gpnd-mnist-gpnd_folds-n3-f0-s1. Classes as configured: n<normal…> or a<anomalous…>
    (`protocol.anomalous=[1]` -> a1); where the protocol drew them, the drawn normal classes."""
    def classes(prefix: str, values: Any) -> str:
        values = values if isinstance(values, (list, tuple)) else [values]
        return prefix + "_".join(_token(v) for v in values)

    parts = [method, dataset, protocol.name]
    if getattr(protocol, "anomalous", None) is not None:
        parts.append(classes("a", protocol.anomalous))
    elif getattr(protocol, "normal", None) is not None:
        parts.append(classes("n", protocol.normal))
    elif normal_classes:
        parts.append(classes("n", list(normal_classes)))
    for attr, prefix in (("fold", "f"), ("draw", "d")):
        if getattr(protocol, attr, None) is not None:
            parts.append(f"{prefix}{getattr(protocol, attr)}")
    parts.append(f"s{seed}")
    return "-".join(parts)


def sweep_group(log_dir: str | Path | None = None) -> str | None:
    """The W&B group of this job: in a Hydra multirun, its sweep dir (relative to `log_dir` when
    inside it, e.g. multirun/ae/digits/2024-05-01_10-00-00), so one sweep's runs are grouped;
    None in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(hc.sweep.dir).resolve()
    if log_dir is not None:
        try:
            return sweep_dir.relative_to(Path(log_dir).resolve()).as_posix()
        except ValueError:
            pass
    return sweep_dir.name


def build_loggers(logger_cfg: DictConfig | None, identity: dict[str, Any] | None = None) -> list:
    """The loggers of `cfg.logger`. identity: {"name", "group", "tags"} of the run, filled into a
    W&B logger's null `name` / `group` and added to its `tags`."""
    loggers = []
    for node in (logger_cfg or {}).values():
        if node is None or "_target_" not in node:
            continue
        if node["_target_"] == WANDB_TARGET:
            loggers.append(_wandb_logger(node, identity or {}))
        else:
            loggers.append(instantiate(node))
    return loggers


def _wandb_logger(node: DictConfig, identity: dict[str, Any]):
    overrides: dict[str, Any] = {}
    for key in ("name", "group"):
        if node.get(key) in (None, "") and identity.get(key):
            overrides[key] = identity[key]
    tags = list(node.get("tags") or [])
    overrides["tags"] = tags + [t for t in identity.get("tags", []) if t not in tags]
    logger = instantiate(node, **overrides)
    try:
        logger.experiment  # start the run now (rank 0 only): a bad set-up fails before training
    except Exception as err:  # wandb's own errors: no API key, no network, bad entity…
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AnomalyError(f"logger=wandb could not start a run ({first}); log in (wandb login, or "
                           "WANDB_API_KEY) or run offline: logger.wandb.offline=true or "
                           "WANDB_MODE=offline") from None
    return logger


def log_config(loggers: Iterable, cfg: DictConfig) -> None:
    """The resolved run config as every logger's hyperparameters (paths resolved where possible)."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only a Hydra app can resolve: log it as written
        config = OmegaConf.to_container(cfg, resolve=False)
    for logger in loggers:
        logger.log_hyperparams(config)


def log_artifacts(loggers: Iterable, results: dict[str, Any], output_dir: str | Path,
                  step: int | None = None) -> None:
    """The run's result PNGs as images in every logger that takes images, and its summary in W&B.
    Call on rank 0 after the results are written."""
    output_dir = Path(output_dir)
    images = {key: output_dir / name for name, key in IMAGES.items() if (output_dir / name).is_file()}
    for logger in loggers:
        if _is_wandb(logger):
            if images:
                import wandb

                # one history row for the three plots (log_image would make a row per key)
                logger.log_metrics({key: wandb.Image(str(path)) for key, path in images.items()}, step=step)
            summary = {k: results[k] for k in SUMMARY_KEYS if results.get(k) is not None}
            summary.update({f"split/{k}": v for k, v in (results.get("split_sizes") or {}).items()})
            logger.experiment.summary.update(summary)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard's SummaryWriter
            for key, path in images.items():
                logger.experiment.add_image(key, _read_rgb(path), global_step=step or 0, dataformats="HWC")


def close_loggers(loggers: Iterable, failed: bool = False) -> None:
    """End the W&B run (rank 0); without this the next job of a sweep, in the same process,
    would log into this run (WandbLogger reuses an active run)."""
    if not any(_is_wandb(logger) for logger in loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _is_wandb(logger: Any) -> bool:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # wandb's integration not importable: no W&B logger can exist
        return False
    return isinstance(logger, WandbLogger)


def _read_rgb(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3]


def table_group(table: str, budget: str) -> str:
    """The W&B group of a reproduced table's cells and of its comparison run."""
    return f"{table}/{budget}"


def has_wandb(logger_cfg: DictConfig | None) -> bool:
    return any(node is not None and node.get("_target_") == WANDB_TARGET for node in (logger_cfg or {}).values())


def log_comparison(logger_cfg: DictConfig | None, group: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                   images: dict[str, Path], save_dir: str | Path) -> None:
    """A run of job type `comparison` in the W&B group of a reproduced table: its rows (ours |
    paper | Δ per cell) as a W&B table and its figures as images, under `comparison/`."""
    for node in (logger_cfg or {}).values():
        if node is None or node.get("_target_") != WANDB_TARGET:
            continue
        import wandb

        settings = OmegaConf.to_container(node, resolve=True)
        run = wandb.init(project=settings.get("project"), entity=settings.get("entity"), group=group,
                         name=f"{group.replace('/', '-')}-comparison", job_type="comparison",
                         tags=list(settings.get("tags") or []) + ["comparison"], dir=str(save_dir),
                         mode="offline" if settings.get("offline") else None, reinit="create_new")
        payload: dict[str, Any] = {"comparison/table": wandb.Table(columns=list(columns), data=[list(r) for r in rows])}
        payload.update({f"comparison/{key}": wandb.Image(str(path)) for key, path in images.items()})
        run.log(payload)
        run.finish()

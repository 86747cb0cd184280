"""What `anomaly.evaluate` does with a trained checkpoint: re-score it on its run's test split, or
label the images of a folder that belong to no split (`predict_folder`), at the checkpoint's
threshold or one fitted again on the run's validation split. The run's parts are built as
`anomaly.pipeline` builds them for training.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError
from anomaly import config_schema, distributed, pipeline, provenance
from anomaly.checkpoints import load_checkpoint
from anomaly.config import method_name
from anomaly.console import print_line, print_results
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.evaluation.thresholds import F1Threshold
from anomaly.methods.base import AnomalyModule, check_checkpoint_identity
from anomaly.results import write_results


def evaluate(cfg: DictConfig) -> dict:
    """Re-score a checkpoint on its run's test split (same dataset, protocol and seed), or with
    `predict_dir=…` label the images of a folder that belong to no split (see `predict_folder`).

    The checkpoint's threshold is used as saved; `refit_threshold=true` fits it again on the
    validation split. `data_dir=…` points at the data if it moved.
    """
    config_schema.check_evaluate(cfg)
    if not cfg.get("ckpt_path"):
        raise AnomalyError("ckpt_path is required: python -m anomaly.evaluate ckpt_path=…/last.ckpt")
    predict_dir = cfg.get("predict_dir")
    files = predict_files(predict_dir) if predict_dir not in (None, "") else None
    ckpt = load_checkpoint(cfg.ckpt_path)
    info = ckpt.get("anomaly") or {}
    if not info.get("config"):
        raise AnomalyError(f"ckpt_path={cfg.ckpt_path} has no run config (not written by anomaly.train)")
    run_cfg = OmegaConf.create(info["config"])
    if cfg.get("method") is not None:
        check_checkpoint_identity(ckpt, method_name(cfg), path=str(cfg.ckpt_path))
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
    threshold = F1Threshold() if legacy and not refit else pipeline.build_threshold(run_cfg)
    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    dm = None
    if files is None or refit:  # the run's data: its test split, or its validation split to refit
        dm = pipeline.build_datamodule(run_cfg)
        dm.prepare_data()
        dm.setup()
    image_shape = tuple(dm.image_shape) if dm is not None else tuple(info.get("image_shape") or ())
    model = pipeline.build_method(run_cfg, dm, threshold, image_shape=image_shape)
    check_checkpoint_identity(ckpt, model.name, image_shape, path=str(cfg.ckpt_path))
    model.load_state_dict(ckpt["state_dict"])
    model.run_config = info["config"]
    if not refit:
        model.post_processor.restore(info.get("threshold_fit") or
                                    ({"configured": run_cfg.threshold.get("strategy")} if legacy else None))
    if files is not None:
        return predict_folder(run_cfg, model, Path(str(predict_dir)).expanduser(), files, output_dir,
                              str(cfg.ckpt_path), dm if refit else None)
    trainer, score_seconds = _score_in_processes(
        run_cfg, model, dm if refit else None, lambda t: t.test(model, datamodule=dm, verbose=False))
    if not trainer.is_global_zero:
        return {}
    summary = pipeline.run_summary(run_cfg, dm, model, score_seconds=round(score_seconds, 3),
                          run_dir=str(output_dir), checkpoint=str(cfg.ckpt_path),
                          threshold_refit=refit,
                          **provenance.record(run_cfg, run_kind="rescore", entry="anomaly.evaluate"))
    results = write_results(output_dir, summary, model.test_scores, model.post_processor.value)
    print_results(results)
    return results


# ---- predictions on a folder of images of no split ----------------------------------------------
class FolderImages(torch.utils.data.Dataset):
    """Decoded images (uint8 N×C×H×W) as batches {image, index} for `Trainer.predict`."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "index": torch.tensor(i, dtype=torch.long)}


def predict_files(predict_dir: str | Path) -> list[Path]:
    """The image files of `predict_dir` and its subfolders, sorted by their path in it."""
    from anomaly.data.io import IMAGE_SUFFIXES

    root = Path(str(predict_dir)).expanduser()
    if not root.is_dir():
        raise AnomalyError(f"predict_dir={predict_dir}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AnomalyError(f"predict_dir={predict_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) "
                           "in it or its subfolders")
    return files


def _score_in_processes(run_cfg: DictConfig, model: AnomalyModule, refit_dm: AnomalyDataModule | None,
                        score: Callable[[L.Trainer], Any]) -> tuple[L.Trainer, float]:
    """An evaluation Trainer (no callbacks, no logger) in every process; the threshold refitted on
    refit_dm's validation split first when one is given; then `score(trainer)`, timed."""
    with distributed.processes() as trainers:
        trainer = pipeline.build_trainer(run_cfg, with_callbacks=False, with_logger=False)
        trainers.append(trainer)
        if refit_dm is not None:
            trainer.validate(model, datamodule=refit_dm, verbose=False)
        start = time.perf_counter()
        score(trainer)
        return trainer, time.perf_counter() - start


def predict_folder(run_cfg: DictConfig, model: AnomalyModule, root: Path, files: list[Path],
                   output_dir: Path, checkpoint: str, dm: AnomalyDataModule | None = None) -> dict:
    """Score `files` with a trained model and label them at its threshold (anomalous: score >
    threshold); write predictions.csv (file relative to `root`, score, anomalous 0/1) into
    output_dir and print one line. The images are read as the run's dataset reads its own: the
    model's channels and image size, the dataset's resize mode, uint8 scaled by the method to its
    value range. dm: the run's datamodule, to refit the threshold on its validation split first."""
    from anomaly.data.io import read_images

    if dm is None and not math.isfinite(model.post_processor.value):
        raise AnomalyError(f"ckpt_path={checkpoint} has no fitted threshold, so images cannot be "
                           "labelled; refit_threshold=true fits one on the run's validation split")
    channels, size = model.image_shape[0], model.image_shape[1]
    images = read_images(files, channels, size, run_cfg.dataset.get("resize_mode", "bilinear"),
                         name=f"predict_dir {root}")
    batch_size = run_cfg.data.get("eval_batch_size") or run_cfg.data.batch_size
    loader = torch.utils.data.DataLoader(FolderImages(images), batch_size=int(batch_size), shuffle=False)
    trainer, score_seconds = _score_in_processes(
        run_cfg, model, dm, lambda t: t.predict(model, dataloaders=loader, return_predictions=False))
    if not trainer.is_global_zero:
        return {}
    predicted = model.predictions
    path = output_dir / "predictions.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "score", "anomalous"])
        for i, score, anomalous in zip(predicted.index.tolist(), predicted.score.tolist(),
                                       predicted.anomalous.tolist()):
            writer.writerow([files[i].relative_to(root).as_posix(), repr(score), int(anomalous)])
    threshold = model.post_processor.value
    n_anomalous = int(predicted.anomalous.sum())
    print_line(f"{len(files)} images of {root} scored by {model.name} ({checkpoint}): {n_anomalous} "
               f"anomalous (score > threshold {threshold:.6g}); predictions: {path}")
    return {"method": model.name, "checkpoint": checkpoint, "predict_dir": str(root),
            "images": len(files), "anomalous": n_anomalous, "threshold": threshold,
            "threshold_refit": dm is not None, "score_seconds": round(score_seconds, 3),
            "predictions": str(path), "run_dir": str(output_dir)}

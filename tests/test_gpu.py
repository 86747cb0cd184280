"""The `gpu` lane: what only a CUDA device can check, run on a lent GPU by device/gpu-checks.sh
(`python -m pytest -m gpu`); skipped where there is no CUDA device.

- the method contract's core for ae, arae and gpnd on CUDA: batches sliced on the device, the
  easy anomaly separated, the checkpoint re-scored to the same metrics;
- exact resume on CUDA (deterministic kernels): a run stopped by SIGTERM and resumed ends with the
  uninterrupted run's metrics and scores;
- no training step syncs: `torch.cuda.set_sync_debug_mode("error")` around every step.
"""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest
import torch

import anomaly.pipeline as pipeline
import anomaly.rescore as rescore
from tests.conftest import compose_config
from tests.helpers.runs import AUROC_FLOOR
from tests.helpers.syncs import around_each_step
from tests.test_cli import run
from tests.test_method_contract import run_config

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

GPU_METHODS = ["ae", "arae", "gpnd"]


@contextmanager
def sync_errors() -> Iterator[None]:
    """CUDA's sync debug mode at "error" inside: an op that makes the host wait raises."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("method", GPU_METHODS)
def test_method_on_cuda_separates_rescores_and_never_syncs_a_step(monkeypatch, tmp_path, mnist_root, method):
    build, trainers, loaders = pipeline.build_trainer, [], []

    def build_trainer(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainers.append((trainer, around_each_step(trainer, sync_errors)))
        return trainer

    monkeypatch.setattr(pipeline, "build_trainer", build_trainer)
    cfg = run_config(tmp_path / "run", mnist_root, method, "trainer=gpu", "trainer.log_every_n_steps=1000",
                     "trainer.enable_progress_bar=true", "callbacks.progress_bar.refresh_seconds=3600")
    keep: dict = {}
    results = pipeline.train(cfg, keep=keep)
    assert results["status"] == "ok" and results["metrics"]["auroc"] > AUROC_FLOOR
    assert trainers[0][1], "no training step ran"
    batch = next(iter(keep["dm"].train_dataloader()))
    assert batch["image"].device.type == "cuda"  # sliced on the device, no copy per batch
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(pipeline, "build_trainer", build)
    again = rescore.evaluate(compose_config(tmp_path / "eval", [f"ckpt_path={ckpt}", "trainer=gpu",
                                                                 "trainer.enable_progress_bar=false",
                                                                 f"method={method}"], config_name="evaluate"))
    assert again["metrics"] == results["metrics"]


def test_resume_on_cuda_is_exact(tmp_path):
    env_free = ["trainer=gpu", "trainer.deterministic=true", "trainer.max_epochs=4", "method.noise_std=0.2",
                "logger=none", "threads=1", "callbacks.model_checkpoint.every_seconds=0"]
    whole = run("anomaly.train", *env_free, f"paths.log_dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    stop = ["+callbacks.fault._target_=tests.helpers.faults.SignalAt", f"+callbacks.fault.signum={int(signal.SIGTERM)}",
            "+callbacks.fault.epoch=2"]
    first = run("anomaly.train", *env_free, "ckpt_path=last", f"paths.log_dir={tmp_path / 'cut'}", *stop, cwd=tmp_path)
    assert first.returncode == 143, first.stderr[-2000:]
    resumed = run("anomaly.train", *env_free, "ckpt_path=last", f"paths.log_dir={tmp_path / 'cut'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    def last(root):
        run_dir = sorted(p for p in (root / "runs" / "ae" / "digits").iterdir() if p.is_dir())[-1]
        return json.loads((run_dir / "results.json").read_text()), np.load(run_dir / "scores.npz")["scores"]

    (a, scores_a), (b, scores_b) = last(tmp_path / "whole"), last(tmp_path / "cut")
    assert b["resumed_from"] and a["metrics"] == b["metrics"]
    assert np.array_equal(scores_a, scores_b)

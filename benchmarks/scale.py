"""6. Scale: time and memory of one training epoch (ae in the framework) at 1×, 2×, 4× the
training-set size. The goal: time linear in the number of images (log-log slope ≈ 1) and the
epoch's working memory (peak RSS during the epoch − RSS at its start; on a GPU, peak allocated
− allocated at its start) flat, i.e. per batch, not per dataset.

Each size runs in a fresh process (`python -m benchmarks.scale --images N …`, one JSON line
out) so that one size's peak memory cannot hide the next one's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[1]  # the repository root, where `benchmarks` imports from


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class EpochMemory(L.Callback):
    """RSS sampled every millisecond during the first training epoch (and CUDA's allocator
    peak on a GPU)."""

    def __init__(self, device) -> None:
        self.device = torch.device(device)
        self.start = self.peak = 0
        self.cuda_start = self.cuda_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(0.001)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = self.peak = current_rss()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_start = torch.cuda.memory_allocated(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.cuda_peak = torch.cuda.max_memory_allocated(self.device)


def scale_point(n_train_set: int, batch_size: int, device, workdir: Path) -> dict:
    """One ae epoch on ≈ n_train_set synthetic images: seconds, images, batches, memory (MB)."""
    from benchmarks.data import datamodule, train_images_for, write_mnist_like
    from benchmarks.training import EpochTimer, quiet_lightning
    from anomaly.methods.ae import Autoencoder

    quiet_lightning()
    root = write_mnist_like(Path(workdir) / f"scale_{n_train_set}", n_train=train_images_for(n_train_set))
    dm = datamodule(root, 32, batch_size)
    n_images = len(dm.split.train)
    torch.manual_seed(0)
    model = Autoencoder([1, 32, 32])
    timer, memory = EpochTimer(device), EpochMemory(device)
    cuda = torch.device(device).type == "cuda"
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = L.Trainer(max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0,
                            accelerator="gpu" if cuda else "cpu", devices=1,
                            logger=L.pytorch.loggers.CSVLogger(log_dir, name="csv", version=""),
                            callbacks=[timer, memory], enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10,
                            inference_mode=False, default_root_dir=log_dir)
        trainer.fit(model, datamodule=dm)
    mb = 1024 ** 2
    return {"images": n_images, "batches": math.ceil(n_images / batch_size), "seconds": timer.seconds,
            "epoch_memory_mb": (memory.peak - memory.start) / mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "dataset_mb": dm.data.images.numel() * dm.data.images.element_size() / mb,
            "cuda_epoch_memory_mb": (memory.cuda_peak - memory.cuda_start) / mb if cuda else None}


def run_point(n_train_set: int, batch_size: int, device, workdir: Path, subprocess_run: bool,
              threads: int | None) -> dict:
    if not subprocess_run:
        return scale_point(n_train_set, batch_size, device, workdir)
    cmd = [sys.executable, "-m", "benchmarks.scale", "--images", str(n_train_set), "--batch",
           str(batch_size), "--device", str(device), "--workdir", str(workdir)]
    if threads:
        cmd += ["--threads", str(threads)]
    # the worker imports `benchmarks` from the repository root, wherever this process was started
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": path})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"scale worker failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def slope(points: list[dict]) -> float:
    """log-log slope of epoch seconds against images (1 = linear)."""
    n = np.log([p["images"] for p in points])
    t = np.log([p["seconds"] for p in points])
    if len(points) < 2 or np.ptp(n) == 0:
        return math.nan
    n = n - n.mean()
    return float((n * (t - t.mean())).sum() / (n * n).sum())  # least squares


def run(size, device, workdir: Path, log=lambda s: None) -> tuple[list[dict], list[str]]:
    """The points at size.scale_factors × size.scale_images and the summary row for the table."""
    points = []
    for factor in size.scale_factors:
        point = run_point(int(size.scale_images * factor), size.scale_batch, device, workdir,
                          size.scale_subprocess, torch.get_num_threads())
        point["factor"] = factor
        points.append(point)
        log(f"[6] scale {factor}×: {point['images']} images, {point['seconds']:.2f} s, epoch memory "
            f"{point['epoch_memory_mb']:.1f} MB")
    return points, summary_row(points, size, device)


def memory_flat(points: list[dict], device) -> tuple[bool, list[float]]:
    """Whether no larger set needs more than the smallest one's working memory, within 25 % (+8 MB
    of allocator noise; a larger set needing less is fine: RSS noise, pages already mapped), and
    the epoch memories (MB)."""
    key = "cuda_epoch_memory_mb" if torch.device(device).type == "cuda" else "epoch_memory_mb"
    mems = [p[key] for p in points]
    return max(mems) <= 1.25 * max(mems[0], 1.0) + 8.0, mems


def verdict(points: list[dict], device):
    """The row's target: time linear in the images (slope ≤ 1.15) and the epoch's memory flat."""
    from benchmarks.core import Verdict

    s, (flat, _) = slope(points), memory_flat(points, device)
    return Verdict(s <= 1.15 and flat, f"slope ≈ 1: {s:.2f}; epoch memory {'flat' if flat else 'grows'}")


def summary_row(points: list[dict], size, device) -> list[str]:
    from benchmarks.core import fmt_time

    s = slope(points)
    flat, mems = memory_flat(points, device)
    first, last = points[0], points[-1]
    factors = ", ".join(f"{p['factor']:g}×" for p in points)
    what = (f"**scale**: one ae training epoch (framework, batch {size.scale_batch}) at {factors} the "
            f"training set ({first['images']:,} → {last['images']:,} images)")
    return ["6", str(torch.get_num_threads()), what, f"{fmt_time(first['seconds'])} at {first['factor']:g}×",
            f"{fmt_time(last['seconds'])} at {last['factor']:g}×", f"log-log slope {s:.2f}",
            f"slope ≈ 1 (linear) {'✓' if s <= 1.15 else '✗'}",
            f"{'✓' if flat else '✗'} epoch memory {' → '.join(f'{m:.0f}' for m in mems)} MB (flat per batch)"]


def points_table(points: list[dict], device) -> str:
    from benchmarks.core import markdown_table

    cuda = torch.device(device).type == "cuda"
    header = ["size", "training images", "batches", "epoch", "per 1k images", "epoch memory",
              "peak RSS (process)", "dataset uint8"]
    rows = []
    for p in points:
        mem = p["cuda_epoch_memory_mb"] if cuda else p["epoch_memory_mb"]
        rows.append([f"{p['factor']:g}×", f"{p['images']:,}", str(p["batches"]), f"{p['seconds']:.2f} s",
                     f"{1000 * p['seconds'] / p['images']:.3f} s", f"{mem:.1f} MB" + (" (GPU)" if cuda else ""),
                     f"{p['peak_rss_mb']:.0f} MB", f"{p['dataset_mb']:.1f} MB"])
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one scale point (a worker of python -m benchmarks)")
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(scale_point(args.images, args.batch, args.device, Path(args.workdir))), flush=True)


if __name__ == "__main__":
    main()

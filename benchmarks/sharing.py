"""7. Trainings sharing one device: k trainings at once (each its own process, as
`anomaly.reproduce jobs_per_gpu=k` runs them) against one alone, in trainings per minute, for the
AE, GPND and ARAE at MNIST size (`Size.share_methods`: `make bench` the AE only) (each method's MNIST paper settings, a short schedule, synthetic
MNIST files). One small training leaves a GPU mostly idle (kernel launches, Python); k of them
fill it. The issue's target on a GPU: 8 jobs ≥ 5× one job's trainings per minute. The times
include each process's start, as a table's fan-out pays it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.core import Case, Check, Goal, Timed
from benchmarks.data import write_mnist_like

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"ae": ["method=ae", "dataset.image_size=32"], "gpnd": ["method=gpnd"],
           "arae": ["method=arae"]}


def command(method: str, data: Path, out: Path, epochs: int, device) -> list[str]:
    return [sys.executable, "-m", "anomaly.train", *METHODS[method], "dataset=mnist", f"paths.data_dir={data}",
            "dataset.loader.download=false", "protocol=one_class", "protocol.normal=[0]",
            f"trainer.max_epochs={epochs}", "trainer=gpu" if device.type == "cuda" else "trainer=default",
            "logger=none", "print_config=false", "trainer.enable_progress_bar=false", "threads=1",
            f"paths.log_dir={out}", f"hydra.run.dir={out}"]


def trainings(method: str, k: int, data: Path, workdir: Path, epochs: int, device) -> Timed:
    """k trainings started together; the seconds per training (wall ÷ k)."""
    # the repository first, then what the environment had (the device machine's wheels dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    stamp = time.perf_counter_ns()
    start = time.perf_counter()
    procs = [subprocess.Popen(command(method, data, workdir / f"{method}-{k}-{stamp}-{i}", epochs, device),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(k)]
    failed = [p.communicate()[1][-500:] for p in procs if p.wait() != 0]
    seconds = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{len(failed)} of {k} {method} trainings failed: {failed[0]}")
    return Timed(k, seconds / k)


def cases(size, device, workdir: Path) -> list[Case]:
    data = workdir / "share-data"
    write_mnist_like(data, n_train=size.share_images)
    out = []
    for k in size.share_jobs:
        for method in size.share_methods:
            goal = Goal("speedup", 5.0 if device.type == "cuda" and k >= 8 else None)
            out.append(Case(
                bench="7", what=f"{method}: {k} trainings at once on one {device.type} vs one alone "
                                f"({size.share_epochs} epochs, {size.share_images} training images)",
                baseline_label="one training", ours_label=f"{k} at once, per training",
                baseline=lambda m=method: trainings(m, 1, data, workdir, size.share_epochs, device),
                ours=lambda m=method, k=k: trainings(m, k, data, workdir, size.share_epochs, device),
                # no warm-up call: each training is a fresh process that pays its own start, as
                # a table's fan-out does (a warm-up would only double the row's time)
                warmup_baseline=lambda: None, warmup_ours=lambda: None,
                compare=lambda a, b: Check(None, f"throughput: {k} trainings finished"), goal=goal,
                repeats=1))
    return out

"""A table's trainings as parallel jobs on one machine.

`jobs=N` runs N trainings at once on the CPU; with `trainer=gpu`, `jobs_per_gpu=k` runs k on each
GPU of the machine (each job sees its own GPU as device 0). Each job is the same
`python -m anomaly.reproduce` command restricted to one training group (its training keys on
the command line), in a process of its own with its share of the cores, writing into its own run
dir below this run's; kept results, skipping and resuming work as in a single process. The
parent prints one line per finished training: where the table stands and the time per training.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from anomaly import AnomalyError
from anomaly.reproduce.tables import Cell, Table, _text, _thaw

log = logging.getLogger("anomaly")


def job_slots(jobs: int, jobs_per_gpu: int, wants_gpu: bool, gpus: int) -> list[str | None]:
    """One entry per parallel job: the GPU it sees (CUDA_VISIBLE_DEVICES), or None on the CPU."""
    for name, value in (("jobs", jobs), ("jobs_per_gpu", jobs_per_gpu)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AnomalyError(f"{name}={value}: must be an integer ≥ 1")
    if wants_gpu and gpus > 0:
        return [str(g) for _ in range(jobs_per_gpu) for g in range(gpus)]
    return [None] * jobs


def group_overrides(table: Table, group: list[Cell]) -> list[str]:
    """The command-line values that restrict the table to this training group."""
    return [f"{k}={_text(_thaw(v))}" for k, v in table.training_key(group[0])]


def run_parallel(table: Table, groups: list[list[Cell]], budget: str, passed: list[str], run_root: Path,
                 results_dir: Path | None, rerun: bool, slots: list[str | None]) -> list[dict]:
    """Every group as its own `anomaly.reproduce` process, len(slots) at a time."""
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    pending = list(enumerate(groups))
    running: dict[int, tuple[subprocess.Popen, str | None, float, Path, list[Cell]]] = {}
    free = list(slots)
    done, times, results = 0, [], []
    run_root.mkdir(parents=True, exist_ok=True)
    log.info("%d trainings, %d at a time (%s), %d threads each", len(groups), len(slots),
             "GPUs " + ",".join(sorted({s for s in slots if s is not None})) if slots[0] is not None else "CPU",
             threads)
    while pending or running:
        while pending and free:
            number, group = pending.pop(0)
            slot = free.pop(0)
            job_dir = run_root / f"job{number:03d}"
            words = [sys.executable, "-m", "anomaly.reproduce", f"table={table.name}", f"budget={budget}",
                     *group_overrides(table, group), *passed, f"threads={threads}", "jobs=1", "jobs_per_gpu=1",
                     f"rerun={str(rerun).lower()}", f"results_dir={results_dir if results_dir else 'null'}",
                     f"hydra.run.dir={job_dir}"]
            env = dict(os.environ)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            with open(run_root / f"job{number:03d}.log", "w") as out:
                proc = subprocess.Popen(words, stdout=out, stderr=subprocess.STDOUT, env=env)
            running[number] = (proc, slot, time.perf_counter(), job_dir, group)
        time.sleep(0.5)
        for number in [n for n, (proc, *_) in running.items() if proc.poll() is not None]:
            proc, slot, start, job_dir, group = running.pop(number)
            free.append(slot)
            done += 1
            seconds = time.perf_counter() - start
            found = _results(job_dir, group, table)
            results += found
            where = "" if slot is None else f" on GPU {slot}"
            failed = "" if proc.returncode == 0 else f" (exit {proc.returncode}: {run_root / f'job{number:03d}.log'})"
            print(progress_line(table, group, found, seconds, times, done, len(running), len(pending))
                  + where + failed, flush=True)
    return results


def progress_line(table: Table, group: list[Cell], found: list[dict], seconds: float, times: list[float],
                  done: int, running: int, left: int) -> str:
    """Where the table stands after a training: done / running / left, this training's cells
    and time, the mean time per training (skipped groups not counted; `times` is updated)."""
    skipped = bool(found) and all(r.get("skipped") for r in found)
    if not skipped:
        times.append(seconds)
    ok = sum(r.get("status") == "ok" for r in found)
    state = "skipped (kept)" if skipped else f"{ok}/{len(group)} cells ok, {seconds:.0f} s"
    mean = f"; {sum(times) / len(times):.0f} s per training" if times else ""
    return (f"[{done}/{done + running + left} done · {running} running · {left} left] "
            f"{' '.join(group_overrides(table, group))}: {state}{mean}")


def _results(job_dir: Path, group: list[Cell], table: Table) -> list[dict]:
    """The group's cell results as the job left them (kept results of skipped cells included:
    the job records them in its run dir's cells.json)."""
    path = job_dir / "cells.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return [{"status": "failed", "error": f"the job wrote no {path}", "reproduce": {"cell": c.as_dict}}
                for c in group]

"""A table's trainings as parallel jobs on one machine.

`jobs=N` runs N trainings at once on the CPU; with `trainer=gpu`, `jobs_per_gpu=k` runs k on each
GPU of the machine (each job sees its own GPU as device 0). Each job is the same
`python -m anomaly.reproduce` command restricted to one training group (its training keys on
the command line), in a process of its own with its share of the cores, writing into its own run
dir below this run's; kept results, skipping and resuming work as in a single process. The
parent prints one line per finished training: where the table stands and the time per training.

SIGTERM or SIGINT (Ctrl-C) to the parent is passed on to the running jobs, which stop at the end
of their epoch in progress with its checkpoint written (`anomaly.callbacks.epoch_end.StopAtEpochEnd`); no
job starts after it, the parent prints one line per stopped job and ends with `RunInterrupted`
(exit 143 / 130). A second signal is passed on too: the jobs stop at once. The jobs run in a
session of their own, so that a Ctrl-C in the terminal reaches them once, through the parent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly import AnomalyError, RunInterrupted
from anomaly.stop_signals import handle_stop_signals, restore_handlers
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


@dataclass
class Job:
    """A training group's running process: its GPU (None: the CPU), when it started, its run
    dir and cells, and how many of the signals the parent received it has been passed."""
    proc: subprocess.Popen
    slot: str | None
    start: float
    job_dir: Path
    group: list[Cell]
    signalled: int = 0

    def pass_on(self, received: list[int]) -> None:
        """Send the job the signals in `received` it has not had yet."""
        while self.signalled < len(received):
            signum = received[self.signalled]
            self.signalled += 1
            if self.proc.poll() is None:
                self.proc.send_signal(signum)


def run_parallel(table: Table, groups: list[list[Cell]], budget: str, passed: list[str], run_root: Path,
                 results_dir: Path | None, rerun: bool, slots: list[str | None]) -> list[dict]:
    """Every group as its own `anomaly.reproduce` process, len(slots) at a time; SIGTERM or
    SIGINT is passed on to the running ones (see the module docstring)."""
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    pending = list(enumerate(groups))
    running: dict[int, Job] = {}
    free = list(slots)
    done, stopped, times, results = 0, 0, [], []
    received: list[int] = []  # SIGTERM / SIGINT to this process, in order

    def pass_on(signum: int, frame: Any) -> None:
        received.append(signum)
        for job in running.values():
            job.pass_on(received)

    run_root.mkdir(parents=True, exist_ok=True)
    log.info("%d trainings, %d at a time (%s), %d threads each", len(groups), len(slots),
             "GPUs " + ",".join(sorted({s for s in slots if s is not None})) if slots[0] is not None else "CPU",
             threads)
    previous = handle_stop_signals(pass_on)
    try:
        while (pending and not received) or running:
            while pending and free and not received:
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
                    proc = subprocess.Popen(words, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
                running[number] = Job(proc, slot, time.perf_counter(), job_dir, group)
                running[number].pass_on(received)  # a signal that came while it started
            time.sleep(0.5)
            for number in [n for n, job in running.items() if job.proc.poll() is not None]:
                job = running.pop(number)
                free.append(job.slot)
                done += 1
                job_log = run_root / f"job{number:03d}.log"
                where = "" if job.slot is None else f" on GPU {job.slot}"
                code = job.proc.returncode
                if job.signalled and code != 0:  # stopped: its own error line says what it kept
                    stopped += 1
                    print(f"[{done}/{len(groups)} · stopped] {' '.join(group_overrides(table, job.group))}{where}: "
                          f"{_error_line(job_log) or f'exit {code}: {job_log}'}", flush=True)
                    continue
                found = _results(job.job_dir, job.group, table)
                results += found
                failed = "" if code == 0 else f" (exit {code}: {job_log})"
                print(progress_line(table, job.group, found, time.perf_counter() - job.start, times, done,
                                    len(running), len(pending)) + where + failed, flush=True)
    finally:
        restore_handlers(previous)
    if received:
        raise RunInterrupted(f"table {table.name} stopped by {signal.Signals(received[0]).name}: {stopped} "
                             f"training{'s' if stopped != 1 else ''} stopped (the lines above), {len(pending)} not "
                             "started; the same command goes on where they stopped", received[0])
    return results


def _error_line(job_log: Path) -> str | None:
    """The last `error: …` line of a job's log, without its `error: ` (None: none)."""
    try:
        lines = job_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


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

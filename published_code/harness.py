"""What the published-code comparisons share: running their trainings a few at a time, so that
one failure loses none of the others, and writing their JSON record atomically."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable


def run_all(jobs: list[tuple[str, int, int]], work: Callable[[str, int, int], dict], at_once: int,
            shown: Callable[[dict], str], save: Callable[[list[dict], list[dict]], None]) -> tuple[list, list]:
    """Each (model, digit, seed) job through `work`, `at_once` at a time; a line per job and
    `save(runs, failures)` after each one."""
    runs: list[dict] = []
    failures: list[dict] = []
    saving = threading.Lock()  # the job threads finish at any time: one save at a time

    def one(job: tuple[str, int, int]) -> None:
        model, digit, seed = job
        start = time.perf_counter()
        try:
            result = work(model, digit, seed)
        except Exception as err:  # noqa: BLE001 (one failed training must not lose the others)
            failures.append({"model": model, "digit": digit, "seed": seed, "error": str(err)[-1500:]})
            print(f"FAILED {model} d{digit} s{seed}: {str(err)[-600:]}", flush=True)
            return
        runs.append(result)
        print(f"[{len(runs) + len(failures)}/{len(jobs)}] {model} d{digit} s{seed}: {shown(result)} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        with saving:
            save(runs, failures)

    print(f"{len(jobs)} trainings, {at_once} at a time", flush=True)
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(one, jobs))
    save(runs, failures)
    return runs, failures


def write_record(out: str | Path, record: dict) -> None:
    """The comparison's JSON, written atomically (a reader never sees half of it)."""
    from anomaly.results import write_json

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)

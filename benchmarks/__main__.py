"""python -m benchmarks [--size quick|default|full] [--device cpu|cuda|auto] [--only 1,3] …"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch

from benchmarks.core import (RESULT_HEADER, load_average, machine_line, markdown_table, result_row,
                                run_case)
from benchmarks.sizes import SIZES, Size

BENCHMARKS = ("1", "2", "3", "4", "5", "6", "7", "8")
TITLES = {"1": "GPND scoring", "2": "AnoGAN search", "3": "training throughput", "4": "ARAE union",
          "5": "data path", "6": "scale", "7": "trainings sharing a device", "8": "bookkeeping"}


def cases_for(bench: str, size: Size, device: torch.device, workdir: Path):
    if bench == "1":
        from benchmarks import gpnd_score
        return gpnd_score.cases(size, device)
    if bench == "2":
        from benchmarks import anogan_search
        return anogan_search.cases(size, device)
    if bench == "3":
        from benchmarks import training
        return training.cases(size, device, workdir)
    if bench == "4":
        from benchmarks import arae_union
        return arae_union.cases(size, device)
    if bench == "5":
        from benchmarks import datapath
        return datapath.cases(size, device, workdir)
    if bench == "7":
        from benchmarks import sharing
        return sharing.cases(size, device, workdir)
    if bench == "8":
        from benchmarks import bookkeeping
        return bookkeeping.cases(size, device, workdir)
    raise ValueError(bench)


def parse_overrides(size: Size, overrides: list[str]) -> Size:
    """--set key=value on the size's fields (ints, floats, tuples as 16,32, booleans)."""
    fields = {f.name: f for f in dataclasses.fields(size)}
    changes = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set {item}: no size field {key!r}; fields: {', '.join(fields)}")
        current = getattr(size, key)
        if isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            changes[key] = tuple(type(current[0])(v) for v in value.split(",") if v)
        elif current is None:
            changes[key] = int(value) if value.lstrip("-").isdigit() else (None if value in ("", "none") else value)
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(size, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--quick", action="store_true", help="the tiny size of the tests (= --size quick)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda where there is one)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="benchmarks to run, e.g. 1,3 (default all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per path (default: the size's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a size field, e.g. --set gpnd_images=1024")
    parser.add_argument("--out", default=None, help="also write the Markdown to this file")
    args = parser.parse_args(argv)

    size = SIZES["quick" if args.quick else args.size]
    size = parse_overrides(size, args.set)
    if args.repeats:
        size = dataclasses.replace(size, repeats=args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in only if b not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"--only {args.only}: unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    warnings.filterwarnings("ignore")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started, load_start = time.perf_counter(), load_average()
    rows, scale_points = [], None
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-") as tmp:
        workdir = Path(tmp)
        for bench in only:
            log(f"== {bench}. {TITLES[bench]} ==")
            if bench == "6":
                from benchmarks import scale
                try:
                    scale_points, row = scale.run(size, device, workdir, log)
                    rows.append(row)
                except Exception as err:  # noqa: BLE001 — reported in the table
                    rows.append(["6", "**scale**", "—", "—", "—", "slope ≈ 1", f"error: {type(err).__name__}: {err}"])
                continue
            try:
                cases = cases_for(bench, size, device, workdir)
            except Exception as err:  # noqa: BLE001
                rows.append([bench, f"**{TITLES[bench]}**", "—", "—", "—", "—",
                             f"error while setting up: {type(err).__name__}: {err}"])
                continue
            for case in cases:
                rows.append(result_row(run_case(case, size.repeats, device, log)))
    minutes = (time.perf_counter() - started) / 60

    lines = [f"### `python -m benchmarks --size {size.name} --device {device.type}` "
             f"({datetime.now():%Y-%m-%d %H:%M})", "",
             f"Machine: {machine_line(device)}. Load average (1/5/15 min) at the start {load_start}, "
             f"at the end {load_average()}: anything above the core count means other work shared the "
             f"CPU, which inflates absolute times; ratios come from the same process, the two paths "
             f"interleaved. Medians of {size.repeats} timed calls after a warm-up"
             + (" (more where a row is short and noisy: GPND scoring and AnoGAN's search 5, the data path 21)" if size.repeats > 1 else "")
             + f"; {minutes:.1f} min in all.",
             "", markdown_table(RESULT_HEADER, rows)]
    if scale_points:
        from benchmarks import scale
        lines += ["", "Scale (benchmark 6):", "", scale.points_table(scale_points, device)]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

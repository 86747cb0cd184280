"""python -m benchmarks [--size quick|default|full] [--device cpu|cuda|auto] [--only 1,3] …
[--check] [--out bench.md] [--readme README.md]; `--from bench.md --readme README.md` puts a saved
run in the README without running anything."""

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

from benchmarks.core import (RESULT_HEADER, Verdict, load_average, machine_line, markdown_table,
                             measure, result_row)
from benchmarks.sizes import SIZES, Size

BENCHMARKS = ("1", "2", "3", "4", "5", "6", "7", "8")
TITLES = {"1": "GPND scoring", "2": "AnoGAN search", "3": "training throughput", "4": "ARAE union",
          "5": "data path", "6": "scale", "7": "trainings sharing a device", "8": "bookkeeping"}
# run once, at the first thread count: 7 runs each training with threads=1 (as a table's fan-out),
# and 6 asks whether time and memory grow linearly, not how fast
# 8 times bookkeeping that does not depend on the thread count, against a figure measured at 1
ONCE = {"6", "7", "8"}


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


def default_threads(device: torch.device) -> list[int]:
    """What a researcher runs: one thread (a table's jobs, `jobs=N threads=1`) and torch's default,
    every core (one training alone); on a GPU only torch's default (the CPU threads feed it)."""
    every = torch.get_num_threads()
    if device.type == "cuda":
        return [every]
    return sorted({1, every})


def parse_threads(text: str | None, device: torch.device) -> list[int]:
    if not text:
        return default_threads(device)
    try:
        threads = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise SystemExit(f"--threads {text}: thread counts ≥ 1, comma-separated (e.g. 1,2)")
    return list(dict.fromkeys(threads))


def check_lines(verdicts: list[tuple[str, int, Verdict]]) -> tuple[list[str], int]:
    """--check: one line per row with a target (the target, the ratio, met or missed) and the
    number missed."""
    mark = {True: "met   ", False: "MISSED", None: "—     "}
    lines = [f"{mark[v.met]} [{row}, {threads} thread{'s' if threads > 1 else ''}] {v.text}"
             for row, threads, v in verdicts]
    missed = sum(v.met is False for _, _, v in verdicts)
    judged = sum(v.met is not None for _, _, v in verdicts)
    lines.append(f"--check: {judged - missed} of {judged} targets met" +
                 (f", {missed} missed: exit status 1" if missed else ""))
    return lines, missed


README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def put_in_readme(readme: Path, text: str) -> None:
    """Replace the README's generated benchmark section with a run's Markdown (its heading says
    the command and the date, its first line the machine, the thread counts and the load)."""
    page = readme.read_text()
    if README_START not in page or README_END not in page:
        raise SystemExit(f"--readme {readme}: no {README_START} … {README_END} section to replace")
    head, rest = page.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(f"{head}{README_START}\n{text.strip()}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--quick", action="store_true", help="the tiny size of the tests (= --size quick)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda where there is one)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="benchmarks to run, e.g. 1,3 (default all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per path (default: the size's)")
    parser.add_argument("--threads", default=None,
                        help="torch CPU thread counts, each row run at each, e.g. 1 or 1,2 (default on a CPU: "
                             "1, as a table's jobs run, and torch's default, every core, as one training "
                             "alone runs; on a GPU torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a size field, e.g. --set gpnd_images=1024")
    parser.add_argument("--out", default=None, help="also write the Markdown to this file")
    parser.add_argument("--readme", default=None,
                        help="also put the Markdown in this file's generated section (between "
                             f"{README_START} and {README_END}), dated as the run")
    parser.add_argument("--from", dest="from_file", default=None, metavar="BENCH_MD",
                        help="with --readme: take a saved --out file instead of running the benchmarks")
    parser.add_argument("--check", action="store_true",
                        help="after the table, each row's target and whether it was met; exit status 1 "
                             "when one was missed (a ratio past its target, different numbers, an error)")
    parser.add_argument("--retries", type=int, default=1,
                        help="with --check, a row that misses its target by its ratio alone is measured "
                             "again, up to this many times (default 1; 0: judge the first measurement)")
    args = parser.parse_args(argv)
    if args.from_file:
        if not args.readme:
            parser.error("--from needs --readme (the file to put the saved run in)")
        put_in_readme(Path(args.readme), Path(args.from_file).read_text())
        return 0

    size = SIZES["quick" if args.quick else args.size]
    size = parse_overrides(size, args.set)
    if args.repeats:
        size = dataclasses.replace(size, repeats=args.repeats)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    threads = parse_threads(args.threads, device)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in only if b not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"--only {args.only}: unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    warnings.filterwarnings("ignore")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started, load_start = time.perf_counter(), load_average()
    rows, scale_points = [], None
    verdicts: list[tuple[str, int, Verdict]] = []
    initial_threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="anomaly-bench-") as tmp:
            workdir = Path(tmp)
            for bench in only:
                log(f"== {bench}. {TITLES[bench]} ==")
                bench_start = time.perf_counter()
                counts = threads[:1] if bench in ONCE else threads
                torch.set_num_threads(counts[0])
                if bench == "6":
                    from benchmarks import scale
                    try:
                        scale_points, row = scale.run(size, device, workdir, log)
                        rows.append(row)
                        verdicts.append((f"6. {TITLES['6']}", counts[0], scale.verdict(scale_points, device)))
                    except Exception as err:  # noqa: BLE001 — reported in the table
                        rows.append(["6", str(counts[0]), "**scale**", "—", "—", "—", "slope ≈ 1",
                                     f"error: {type(err).__name__}: {err}"])
                        verdicts.append((f"6. {TITLES['6']}", counts[0], Verdict(False, f"error: {err}")))
                else:
                    try:
                        cases = cases_for(bench, size, device, workdir)
                        log(f"[{bench}] set up in {time.perf_counter() - bench_start:.1f} s")
                    except Exception as err:  # noqa: BLE001
                        cases = []
                        rows.append([bench, "—", f"**{TITLES[bench]}**", "—", "—", "—", "—",
                                     f"error while setting up: {type(err).__name__}: {err}"])
                        verdicts.append((f"{bench}. {TITLES[bench]}", 0, Verdict(False, f"error while setting up: {err}")))
                    for case in cases:
                        for count in case.thread_counts(counts):  # adjacent rows: the same case at each thread count
                            torch.set_num_threads(count)
                            retries = args.retries if args.check else 0
                            result = measure(case, size.repeats, device, log, retries)
                            rows.append(result_row(result))
                            verdicts.append((f"{bench}. {case.what}", count, result.verdict()))
                log(f"== {bench}. {TITLES[bench]}: {(time.perf_counter() - bench_start) / 60:.1f} min ==")
    finally:
        torch.set_num_threads(initial_threads)
    minutes = (time.perf_counter() - started) / 60

    lines = [f"### `python -m benchmarks --size {size.name} --device {device.type} --threads "
             f"{','.join(map(str, threads))}` ({datetime.now():%Y-%m-%d %H:%M})", "",
             f"Machine: {machine_line(device, threads)}. Load average (1/5/15 min) at the start {load_start}, "
             f"at the end {load_average()}: anything above the core count means other work shared the "
             f"CPU, which inflates absolute times; ratios come from the same process, the two paths "
             f"interleaved. Medians of {size.repeats} timed calls after a warm-up"
             + (" (more where a row is short and noisy: GPND's latent-16 scoring and AnoGAN's "
                "batched search 5, f-AnoGAN's one pass 11, the data path 21)" if size.repeats > 1 else "")
             + f"; {minutes:.1f} min in all.",
             "", markdown_table(RESULT_HEADER, rows)]
    if scale_points:
        from benchmarks import scale
        lines += ["", "Scale (benchmark 6):", "", scale.points_table(scale_points, device)]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.readme:
        put_in_readme(Path(args.readme), text)
    if args.check:
        report, missed = check_lines(verdicts)
        print("\n" + "\n".join(report), flush=True)
        return 1 if missed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

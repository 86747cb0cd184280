"""`python -m anomaly.reproduce --measure-flops table=NAME [budget=paper] [variant=NAME] [batches=4]
[data_dir=PATH] [out=reproduced/training_flops.json]`: each variant's training FLOPs per image (every
stage of it), counted as a run counts them (`anomaly.cost.probe_flops_per_image` on the table's
first cell at that budget), and the seconds its training batches take here with one thread;
from them the FLOPs and CPU hours of its whole schedule. Written to a small JSON (merged into
what the file holds for other tables and budgets) that `--list` reads for the tables' cost, and
with which a compute budget is sized (the benchmark tables' comments give the arithmetic).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from anomaly import AnomalyError
from anomaly.provenance import CONF_DIR

OUT = CONF_DIR.parent / "reproduced" / "training_flops.json"
KEYS = ("table", "budget", "variant", "batches", "data_dir", "out")


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for word in argv:
        if word.startswith("--"):
            continue
        key, sep, value = word.partition("=")
        if not sep or key not in KEYS:
            raise AnomalyError(f"{word}: --measure-flops takes {', '.join(k + '=' for k in KEYS)}")
        args[key] = value
    if "table" not in args:
        raise AnomalyError("--measure-flops needs table=NAME")
    return args


def measure_variant(table, variant: str, budget: str, batches: int, data_dir: str | None, scratch: Path) -> dict:
    """One variant's stages (FLOPs per image, scheduled epochs, seconds per batch) on the table's
    first cell at `budget`, with the whole schedule's FLOPs and CPU seconds."""
    import torch

    from anomaly.config import compose
    from anomaly.cost import limited, loader_batch_sizes, probe_flops_per_image, stage_epochs
    from anomaly.pipeline import build_datamodule, build_method
    from anomaly.reproduce.tables import Cell

    first = {k: v[0] for k, v in table.grid.items() if k != "variant"}
    cell = Cell.of({"variant": variant, **{k: v for k, v in first.items()},
                    **table.budget_restrictions(budget)})
    user = ["threads=1", "trainer.enable_progress_bar=false", "logger=none"]
    user += [f"paths.data_dir={data_dir}"] if data_dir else []
    cfg = compose(scratch / variant, table.overrides(cell, budget, user))
    from anomaly import config_schema

    config_schema.check_train(cfg)
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    model = build_method(cfg, dm)
    scheduled = stage_epochs(model, cfg)
    flops, seconds = probe_flops_per_image(cfg, model, dm, scheduled, timed_batches=batches)
    sizes = limited(loader_batch_sizes(dm.train_dataloader()), cfg.trainer.get("limit_train_batches"))
    stages = {}
    for stage, epochs in scheduled.items():
        per_batch = statistics.median(seconds[stage]) if seconds.get(stage) else None
        stages[stage] = {"flops_per_image": flops[stage], "epochs": epochs,
                         "cpu_seconds_per_batch": None if per_batch is None else round(per_batch, 4),
                         "timed_batches": len(seconds.get(stage) or [])}
    schedule_flops = sum(flops[s] * e * sum(sizes) for s, e in scheduled.items())
    cpu_seconds = sum((stages[s]["cpu_seconds_per_batch"] or 0.0) * e * len(sizes) for s, e in scheduled.items())
    return {"command_cell": cell.as_dict, "batch_size": sizes[0] if sizes else None,
            "images_per_epoch": sum(sizes), "batches_per_epoch": len(sizes), "stages": stages,
            "schedule_flops": schedule_flops, "schedule_cpu_seconds": round(cpu_seconds, 1),
            "seconds_per_gflop": (round(1e9 * cpu_seconds / schedule_flops, 4) if schedule_flops else None)}


def main(argv: list[str]) -> int:
    import torch

    from anomaly.reproduce.cli import load_tables
    from anomaly.results import machine, write_json
    from anomaly.sweep import machine_load

    args = parse(argv)
    budget, batches = args.get("budget", "paper"), int(args.get("batches", 4))
    out = Path(args.get("out") or OUT)
    (table,) = load_tables(args["table"]) or [None]
    if table is None:
        raise AnomalyError(f"table={args['table']}: no such table in conf/table/")
    variants = [args["variant"]] if "variant" in args else list(table.grid.get("variant") or [None])
    torch.set_num_threads(1)
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"measure-flops-{os.getpid()}"
    found = {}
    for variant in variants:
        start = time.perf_counter()
        found[variant] = measure_variant(table, variant, budget, batches, args.get("data_dir"), scratch)
        print(f"{variant}: " + ", ".join(f"{s} {v['flops_per_image']:.3g} FLOPs/image, {v['cpu_seconds_per_batch']} CPU s/batch"
                                          for s, v in found[variant]["stages"].items())
              + f"; schedule {found[variant]['schedule_flops']:.3g} FLOPs ({time.perf_counter() - start:.0f} s)",
              flush=True)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data.setdefault("about", "training FLOPs per image of each stage (torch.utils.flop_counter.FlopCounterMode, "
                             "as anomaly.cost counts them in a run) and CPU seconds per training batch with one "
                             "thread (CPU time) on the machine named, by table, budget and variant; written by "
                             "python -m anomaly.reproduce --measure-flops")
    entry = data.setdefault("tables", {}).setdefault(table.name, {}).setdefault(budget, {})
    entry["measured"] = {"command": " ".join(["python -m anomaly.reproduce --measure-flops",
                                              *(shlex.quote(a) for a in argv
                                                if not a.startswith(("--", "data_dir=", "out=")))]),
                         "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "threads": 1,
                         "load_average": machine_load(), "torch": torch.__version__}
    entry.setdefault("variants", {}).update(found)
    write_json(out, data)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

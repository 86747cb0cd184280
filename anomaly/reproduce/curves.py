"""Training curves of a table's cells, from their run logs: a metric logged during training (the
validation AUROC by default) against the epoch, one curve per cell, followed across the runs a
stopped training resumed in (each run's CSV log continues the step count; where two runs logged
one step, the later run's value is kept).

    python -m anomaly.reproduce.curves outputs/reproduce/arae_mnist_p2/paper \
        --out reproduced/curves/arae_mnist_p2-paper.json --plot docs/arae_mnist_p2_curves.png

The JSON keeps the points, whether each cell's training finished (its results.json written) and
the command that made it; `--merge` keeps the cells of an earlier --out file that these runs do
not hold (their run folders gone, say: a machine that did not outlive its session), each with the
command and date of the file it came from; the figure has one panel per value of `--panel` (the normal class by
default), one curve per other cell key (the variant), and the paper's number of each panel where
the table gives one (a dashed line: what the published model reached at the end of its schedule).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf

from anomaly.provenance import CONF_DIR

# a run dir's cell folder is named from its grid values: "arae_linf-normal8", "n_normal7-draw3"
SEGMENT = re.compile(r"^(?P<key>[a-z_]+?)(?P<value>\d+(?:\.\d+)?)$")


def cell_keys(name: str) -> dict[str, str]:
    """The grid values a cell folder's name holds: "arae_linf-normal8" → {variant: arae_linf,
    normal: 8} (a segment without a number is the variant)."""
    keys = {}
    for segment in name.split("-"):
        match = SEGMENT.match(segment)
        if match:
            keys[match["key"]] = match["value"]
        else:
            keys["variant"] = segment
    return keys


def read_points(metrics_csv: Path, metric: str) -> dict[int, tuple[int, float]]:
    """step → (epoch, value) of every row of a Lightning CSV log that has the metric."""
    with metrics_csv.open(newline="") as f:
        return {int(row["step"]): (int(row["epoch"]), float(row[metric]))
                for row in csv.DictReader(f) if row.get(metric)}


def cell_curves(runs_root: Path, metric: str) -> dict[str, dict]:
    """Cell name → {points: [[epochs trained, step, value], …], finished, test} over every run under
    runs_root (one timestamped folder per `reproduce` call), the runs in time order."""
    cells: dict[str, dict] = {}
    for log in sorted(runs_root.glob("*/*/csv/metrics.csv"), key=lambda p: p.parts[-4]):
        cell_dir = log.parent.parent
        cell = cells.setdefault(cell_dir.name, {"by_step": {}, "finished": False, "runs": []})
        cell["by_step"].update(read_points(log, metric))  # a later run's value for a step wins
        cell["runs"].append(cell_dir.parent.name)
        results = cell_dir / "results.json"
        if results.exists():
            summary = json.loads(results.read_text())
            cell["finished"] = summary.get("status") == "ok"
            cell["test"] = summary.get("metrics", {}).get(metric.split("/", 1)[-1])
            cell["epochs"] = summary.get("epochs")
    for cell in cells.values():
        by_step = cell.pop("by_step")
        # epochs trained when the value was logged; the check after the last epoch logs one past it
        last = cell.get("epochs") or max((e + 1 for e, _ in by_step.values()), default=0)
        points = {min(epoch + 1, last): [min(epoch + 1, last), step, value]
                  for step, (epoch, value) in sorted(by_step.items())}
        cell["points"] = list(points.values())
    return dict(sorted(cells.items()))


def kept_cells(earlier: dict, metric: str, fresh: set[str]) -> dict[str, dict]:
    """The cells of an earlier curves file that `fresh` does not hold, each with the command and date
    of the file it came from (a cell's own `from` where it was merged in before). A cell with no
    points (a run lost before its first check) is not kept: a fresh run of it replaces it."""
    if earlier.get("metric") != metric:
        raise SystemExit(f"error: --merge: the curves file holds {earlier.get('metric')}, not {metric}")
    source = {"command": earlier.get("command"), "created": earlier.get("created")}
    return {name: {**cell, "from": cell.get("from", source)} for name, cell in earlier.get("cells", {}).items()
            if name not in fresh and cell.get("points")}


def paper_numbers(table: str, metric: str, panel: str) -> dict[str, tuple[str, float]]:
    """Panel value → (the variant it is of, the paper's number), from conf/table/<table>.yaml."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "table" / f"{table}.yaml"))["table"]
    numbers = {}
    for entry in config.get("paper", []):
        where = entry["where"]
        value = where.get(f"protocol.{panel}", where.get(panel))
        if metric in entry and value is not None:
            key = str(value[0] if isinstance(value, list) else value)
            numbers[key] = (where.get("variant", ""), float(entry[metric]))
    return numbers


def plot(curves: dict[str, dict], panel: str, paper: dict[str, tuple[str, float]], metric: str,
         title: str, path: Path) -> list[Path]:
    """One figure per panel value (path with the value before its suffix): each cell's curve
    (a hollow end marker while its training is unfinished) and the paper's number."""
    from anomaly import plots

    panels: dict[str, dict[str, dict]] = {}
    for name, cell in curves.items():
        keys = cell_keys(name)
        panels.setdefault(keys.get(panel, "all"), {})[keys.get("variant", name)] = cell
    written = []
    for value, series in sorted(panels.items()):
        fig, (ax,) = plots.figure(size=(5.0, 3.4))
        for variant, cell in sorted(series.items()):
            if not cell["points"]:
                continue
            epochs = [p[0] for p in cell["points"]]
            values = [p[2] for p in cell["points"]]
            state = "" if cell["finished"] else f", unfinished at epoch {epochs[-1]}"
            (line,) = ax.plot(epochs, values, label=f"{variant} (last {values[-1]:.3f}{state})")
            ax.plot(epochs[-1:], values[-1:], "o", color=line.get_color(),
                    fillstyle="full" if cell["finished"] else "none")
        if value in paper:
            variant, number = paper[value]
            ax.axhline(number, color=plots.PAPER_COLOUR, linestyle="--", linewidth=0.8,
                       label=f"paper, {variant} ({number:.3f})")
        ax.set_xlabel("epoch")
        ax.set_ylabel({"val/auroc": "validation AUROC"}.get(metric, metric))
        ax.set_title(f"{title}, {panel} {value}")
        ax.legend(loc="lower right")
        out = path.with_name(f"{path.stem}_{panel}{value}{path.suffix}")
        written.append(plots.save(fig, out))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anomaly.reproduce.curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_root", type=Path, help="a table's run folder: outputs/reproduce/<table>/<budget>")
    parser.add_argument("--metric", default="val/auroc", help="a metric of the CSV logs (default val/auroc)")
    parser.add_argument("--panel", default="normal", help="the cell key that makes one figure each (default normal)")
    parser.add_argument("--out", type=Path, help="write the curves here (JSON)")
    parser.add_argument("--plot", type=Path, help="draw the figures here (one per panel value, the value added to the name)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the cells of the --out file that runs_root has no logs of (each says where it came from)")
    args = parser.parse_args(argv)
    if args.merge and not args.out:
        parser.error("--merge needs --out: the curves file to merge into")
    if not args.runs_root.is_dir():
        parser.error(f"{args.runs_root}: no such folder (a table's runs: outputs/reproduce/<table>/<budget>)")
    curves = cell_curves(args.runs_root, args.metric)
    if not curves:
        parser.error(f"{args.runs_root}: no CSV logs with {args.metric} under <run>/<cell>/csv/metrics.csv")
    table, budget = args.runs_root.parts[-2], args.runs_root.parts[-1]
    record = {"command": shlex.join(["python", "-m", "anomaly.reproduce.curves", *(argv if argv is not None else sys.argv[1:])]),
              "table": table, "budget": budget, "metric": args.metric,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cells": curves}
    if args.merge and args.out.exists():
        curves.update(kept_cells(json.loads(args.out.read_text()), args.metric, set(curves)))
        record["cells"] = curves = dict(sorted(curves.items()))
    for name, cell in curves.items():
        last = cell["points"][-1] if cell["points"] else None
        print(f"{name}: {len(cell['points'])} points" + (f", last {last[2]:.4f} after epoch {last[0]}" if last else "")
              + ("" if cell["finished"] else " (unfinished)"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        paper = paper_numbers(table, args.metric.split("/", 1)[-1], args.panel) if (CONF_DIR / "table" / f"{table}.yaml").exists() else {}
        for path in plot(curves, args.panel, paper, args.metric, f"{table} ({budget})", args.plot):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

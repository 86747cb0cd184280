"""Run outputs: results.json, scores.npz, roc.png, score_hist.png (the figures are drawn by
`anomaly.plots`; `plot_examples` is re-exported here for the pipeline's examples.png).

`results.json` is the one file the report reads; NaN metrics are written as null. Its `suspect`
lists the numbers that cannot be right (`anomaly.evaluation.suspect`): flagged, the status kept.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.evaluation.suspect import suspect_flags
from anomaly.evaluation.gather import ScoredSplit
from anomaly.plots import classes_text, plot_examples, plot_roc, plot_score_hist, run_title

__all__ = ["write_results", "write_json", "example_indices", "plot_examples", "run_title", "versions", "machine"]


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy/torch scalars → Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any, default: Any = None) -> None:
    """Write a JSON file atomically: a reader (or a run killed half-way) never sees half a file.
    `default`: json.dumps's, for values JSON has no type for."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=default) + "\n")
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    """Python's version and every installed distribution the process has imported (torch,
    lightning, numpy, scipy, scikit-learn, hydra-core, …): what a run's numbers can depend on."""
    out = {"python": platform.python_version()}
    owners = _distributions_of_modules()
    imported = {name.split(".", 1)[0] for name in list(sys.modules)}
    for module in sorted(imported):
        for dist in owners.get(module, ()):
            version = _installed_version(dist)
            if dist not in out and version is not None:
                out[dist] = version
    out["torch"] = torch.__version__  # with its build tag (+cu130, +cpu)
    return dict(sorted(out.items()))


# What is installed does not change while a process runs, and reading it is slow (every
# distribution's RECORD: 0.4 s a call on 2 cores, seconds on a busy machine, paid by each
# results.json: a table's cells, a test suite's runs): read once per process.
@functools.cache
def _distributions_of_modules() -> dict[str, tuple[str, ...]]:
    from importlib import metadata

    try:
        return {module: tuple(dists) for module, dists in metadata.packages_distributions().items()}
    except Exception:  # noqa: BLE001 - a broken distribution record must not fail a run
        return {}


@functools.cache
def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Where a run ran: the CPU model and the kernels torch picks on it (the same run gave AUROC
    0.91778 on one 2-core EPYC and 0.91750 on another), and the GPUs with their CUDA version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(),
                           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def write_results(output_dir: str | Path, summary: dict[str, Any], scores: ScoredSplit | None,
                  threshold: float, plots: bool = True) -> dict[str, Any]:
    """Write results.json (summary + its suspect flags + creation time + versions), scores.npz and
    the plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    suspect = suspect_flags(summary.get("metrics"), summary.get("val_metrics"),
                            scores.score.numpy() if scores is not None else None)
    payload = json_safe({**summary, "suspect": suspect, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "versions": versions(), "machine": machine()})
    write_json(output_dir / "results.json", payload)
    if scores is not None:
        np.savez_compressed(output_dir / "scores.npz", scores=scores.score.numpy(),
                            anomalous=scores.anomalous.numpy().astype(np.int8),
                            labels=scores.label.numpy(), index=scores.index.numpy(),
                            threshold=np.float64(threshold))
        if plots and summary.get("status") == "ok":
            classes = classes_text(summary.get("protocol") or {})  # "normal 1,3,77"
            title = run_title(summary)
            score = scores.score.double().numpy()
            anomalous = scores.anomalous.numpy().astype(bool)
            plot_roc(score, anomalous, payload["metrics"].get("auroc"), output_dir / "roc.png", title,
                     label=classes, threshold=threshold)
            plot_score_hist(score, anomalous, threshold, output_dir / "score_hist.png", title)
    return payload


def example_indices(scores: ScoredSplit, per_group: int = 8) -> dict[str, torch.Tensor]:
    """Positions in the scored split of the lowest-scored normals and the highest-scored
    anomalies, and the other way round (the mistakes a person wants to see)."""
    out = {}
    for name, mask, descending in (("normal, lowest scores", ~scores.anomalous, False),
                                   ("normal, highest scores", ~scores.anomalous, True),
                                   ("anomalous, lowest scores", scores.anomalous, False),
                                   ("anomalous, highest scores", scores.anomalous, True)):
        pos = torch.nonzero(mask).flatten()
        if len(pos):
            order = torch.argsort(scores.score[pos], descending=descending)[:per_group]
            out[name] = pos[order]
    return out

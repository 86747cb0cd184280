"""Run outputs: results.json, scores.npz, roc.png, score_hist.png (the figures are drawn by
`anomaly.plots`; `plot_examples` is re-exported here for the pipeline's examples.png).

`results.json` is the one file the report reads; NaN metrics are written as null.
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.methods.base import ScoredSplit
from anomaly.plots import classes_text, plot_examples, plot_roc, plot_score_hist

__all__ = ["write_results", "example_indices", "plot_examples", "versions"]


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


def versions() -> dict[str, str]:
    import lightning
    import torchmetrics

    return {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": lightning.__version__, "torchmetrics": torchmetrics.__version__}


def write_results(output_dir: str | Path, summary: dict[str, Any], scores: ScoredSplit | None,
                  threshold: float, plots: bool = True) -> dict[str, Any]:
    """Write results.json (summary + creation time + versions), scores.npz and the plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = json_safe({**summary, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "versions": versions()})
    (output_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    if scores is not None:
        np.savez_compressed(output_dir / "scores.npz", scores=scores.score.numpy(),
                            anomalous=scores.anomalous.numpy().astype(np.int8),
                            labels=scores.label.numpy(), index=scores.index.numpy(),
                            threshold=np.float64(threshold))
        if plots and summary.get("status") == "ok":
            classes = classes_text(summary.get("protocol") or {})  # "normal 1,3,77"
            title = f"{summary.get('method')} · {summary.get('dataset')} · {classes}"
            score = scores.score.double().numpy()
            anomalous = scores.anomalous.numpy().astype(bool)
            plot_roc(score, anomalous, payload["metrics"].get("auroc"), output_dir / "roc.png", title,
                     label=classes)
            plot_score_hist(score, anomalous, threshold, output_dir / "score_hist.png", title)
    return payload


def example_indices(scores: ScoredSplit, per_group: int = 8) -> dict[str, torch.Tensor]:
    """Dataset indices of the lowest-scored normals and the highest-scored anomalies, and the
    other way round (the mistakes a person wants to see)."""
    out = {}
    for name, mask, descending in (("normal, lowest scores", ~scores.anomalous, False),
                                   ("normal, highest scores", ~scores.anomalous, True),
                                   ("anomalous, lowest scores", scores.anomalous, False),
                                   ("anomalous, highest scores", scores.anomalous, True)):
        pos = torch.nonzero(mask).flatten()
        if len(pos):
            order = torch.argsort(scores.score[pos], descending=descending)[:per_group]
            out[name] = scores.index[pos[order]]
    return out

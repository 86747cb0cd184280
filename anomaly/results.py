"""Run outputs: results.json, scores.npz, roc.png, score_hist.png.

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


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy/torch scalars → Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
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
    payload = _clean({**summary, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "versions": versions()})
    (output_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    if scores is not None:
        np.savez_compressed(output_dir / "scores.npz", scores=scores.score.numpy(),
                            anomalous=scores.anomalous.numpy().astype(np.int8),
                            labels=scores.label.numpy(), index=scores.index.numpy(),
                            threshold=np.float64(threshold))
        if plots and summary.get("status") == "ok":
            protocol = summary.get("protocol", {})
            title = (f"{summary.get('method')} · {summary.get('dataset')} · normal "
                     f"{protocol.get('normal_names', protocol.get('normal'))}")
            plot_roc(scores, payload["metrics"].get("auroc"), output_dir / "roc.png", title)
            plot_score_hist(scores, threshold, output_dir / "score_hist.png", title)
    return payload


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(scores: ScoredSplit, auroc: float | None, path: Path, title: str = "") -> None:
    from torchmetrics.functional.classification import binary_roc

    from anomaly.metrics import _ranks

    plt = _pyplot()
    fpr, tpr, _ = binary_roc(_ranks(scores.score), scores.anomalous.long())
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    label = f"AUROC {auroc:.3f}" if auroc is not None else "ROC"
    ax.plot(fpr.numpy(), tpr.numpy(), lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate (normals flagged)", ylabel="true positive rate (anomalies flagged)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_score_hist(scores: ScoredSplit, threshold: float, path: Path, title: str = "") -> None:
    plt = _pyplot()
    s = scores.score.double().numpy()
    a = scores.anomalous.numpy().astype(bool)
    bins = np.histogram_bin_edges(s, bins=50)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.hist(s[~a], bins=bins, alpha=0.6, density=True, label=f"normal (n={int((~a).sum())})")
    ax.hist(s[a], bins=bins, alpha=0.6, density=True, label=f"anomalous (n={int(a.sum())})")
    if math.isfinite(threshold):
        ax.axvline(threshold, c="k", ls="--", lw=1, label="threshold (validation)")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density", title=title)
    ax.title.set_fontsize(9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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


def plot_examples(groups: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path, title: str = "") -> None:
    """Rows of inputs over their reconstructions, one pair of rows per group."""
    from torchvision.utils import make_grid

    plt = _pyplot()
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.1 * len(groups)), dpi=120, squeeze=False)
    for ax, (name, (inputs, recon)) in zip(axes[:, 0], groups.items()):
        grid = make_grid(torch.cat([inputs, recon]), nrow=len(inputs), padding=1, pad_value=0.5)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{name}: inputs (top) and reconstructions", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

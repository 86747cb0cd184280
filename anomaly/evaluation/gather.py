"""Gathering over ranks, once for every scoring loop: the rows each rank scored (validation, test,
predict) gathered into one split, each dataset index once, in index order, as the components
(`anomaly.evaluation.post_processor`, `.evaluator`) and results see them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from anomaly import AnomalyError


@dataclass
class ScoredSplit:
    """Scores of one split, gathered over ranks and ordered as the split's indices."""

    score: torch.Tensor
    anomalous: torch.Tensor
    label: torch.Tensor
    index: torch.Tensor


@dataclass
class Predicted:
    """Predictions on images of no split, gathered over ranks and ordered by `index` (the
    images' positions in what was predicted): score, and anomalous = score > threshold."""

    score: torch.Tensor
    anomalous: torch.Tensor
    index: torch.Tensor


def gather_rows(module: Any, rows: list[dict[str, torch.Tensor]], empty: str,
                uneven: bool = False) -> dict[str, torch.Tensor]:
    """The rows' tensors (batches of {name: tensor}, one of them `index`), gathered over the
    module's ranks, each `index` once, in index order, on the host. empty: the error where there
    are no rows. uneven: ranks may hold different numbers of rows (Lightning's predict sampler does
    not pad); they are padded to the longest with index -1 for the gather, and dropped after."""
    if not rows:
        raise AnomalyError(empty)
    local = {k: torch.cat([b[k] for b in rows]) for k in rows[0]}
    if module.trainer is not None and module.trainer.world_size > 1:
        flags = [k for k, v in local.items() if v.dtype == torch.bool]
        for k in flags:
            local[k] = local[k].to(torch.uint8)  # not every backend gathers bool
        if uneven:
            local = pad_rows(local, int(module.all_gather(torch.tensor(len(local["index"]),
                                                                       device=module.device)).max()))
        gathered = module.all_gather(local)
        local = {k: v.reshape(-1, *v.shape[2:]) for k, v in gathered.items()}
        if uneven:
            keep = local["index"] >= 0
            local = {k: v[keep] for k, v in local.items()}
        for k in flags:
            local[k] = local[k].bool()
    # DistributedSampler pads with repeats: keep each dataset index once, in index order
    index, first = first_occurrence(local["index"])
    return {**{k: v[first].cpu() for k, v in local.items() if k != "index"}, "index": index.cpu()}


def pad_rows(local: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Each tensor padded to `rows` rows (zeros; `index` with -1, which marks the padding)."""
    missing = rows - len(local["index"])
    if missing <= 0:
        return local
    return {k: torch.cat([v, torch.full((missing, *v.shape[1:]), -1 if k == "index" else 0,
                                        dtype=v.dtype, device=v.device)]) for k, v in local.items()}


def first_occurrence(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values of `index` and the position of each one's first occurrence."""
    uniq, inverse = torch.unique(index, sorted=True, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((len(uniq),), len(index), dtype=torch.long, device=index.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return uniq, first

"""Scores of a split as the components see them: gathered over ranks and ordered by index."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

"""Fully connected networks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from torch import nn


class MLP(nn.Module):
    """Linear layers with an activation between them (none after the last)."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.LeakyReLU(negative_slope)]
            prev = width
        layers.append(nn.Linear(prev, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No parameter gradients for these modules inside the block (gradients still flow through
    them to their inputs): an update of one network does not compute or leave gradients in
    another's parameters."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)

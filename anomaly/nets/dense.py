"""Fully connected autoencoder halves for flattened images (ARAE's network).

The ARAE paper's MLP: C·H·W → 512 → 256 → latent 128, decoder mirrored, a sigmoid after every
layer (the latent and the output included), Glorot-normal weights and zero biases. Widths,
activation and output are parameters so that the published union code's ReLU / linear-output
variant and other image sizes use the same classes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from anomaly import AnomalyError

DENSE_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


def _activation(name: str, what: str) -> nn.Module:
    if name not in DENSE_ACTIVATIONS:
        raise AnomalyError(f"{what} activation {name!r}; choose one of {sorted(DENSE_ACTIVATIONS)}")
    return DENSE_ACTIVATIONS[name]()


def glorot_init(module: nn.Module) -> None:
    """Glorot-normal (Keras glorot_normal, torch xavier_normal_) weights and zero biases for
    every Linear layer."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _dense_stack(widths: Sequence[int], activation: str, last_activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    pairs = list(zip(widths[:-1], widths[1:]))
    for i, (prev, width) in enumerate(pairs):
        layers.append(nn.Linear(prev, width))
        layers.append(_activation(last_activation if i == len(pairs) - 1 else activation, "dense"))
    return nn.Sequential(*layers)


def _check_hidden(hidden: Sequence[int]) -> list[int]:
    hidden = [int(w) for w in hidden]
    if any(w <= 0 for w in hidden):
        raise AnomalyError(f"dense hidden widths {hidden} must all be positive")
    return hidden


class DenseEncoder(nn.Module):
    """x (B×C×H×W, or anything with C·H·W features per sample) → B×out_features (the latent).
    `image_shape`: the input's shape (C, H, W), or its number of features.

    `hidden` are the hidden widths from the input side (the paper, and None: 512, 256); `activation`
    follows every layer, the latent included (the paper: sigmoid).
    """

    def __init__(self, image_shape: int | Sequence[int], out_features: int = 128,
                 hidden: Sequence[int] | None = (512, 256), activation: str = "sigmoid") -> None:
        super().__init__()
        hidden = (512, 256) if hidden is None else hidden
        self.in_features = int(image_shape) if isinstance(image_shape, int) else math.prod(image_shape)
        self.net = _dense_stack([self.in_features, *_check_hidden(hidden), int(out_features)],
                                activation, activation)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class DenseDecoder(nn.Module):
    """z (B×in_features) → B×C×H×W (`image_shape`).

    `hidden` are the hidden widths from the latent side (the paper, and None: 256, 512, the
    encoder's mirrored); `activation` follows every hidden layer, `output` the last one (the paper: both
    sigmoid).
    """

    def __init__(self, in_features: int, image_shape: Sequence[int], hidden: Sequence[int] | None = (256, 512),
                 activation: str = "sigmoid", output: str = "sigmoid") -> None:
        super().__init__()
        hidden = (256, 512) if hidden is None else hidden
        self.out_shape = tuple(int(s) for s in image_shape)
        self.net = _dense_stack([int(in_features), *_check_hidden(hidden), math.prod(self.out_shape)],
                                activation, output)
        glorot_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(len(z), *self.out_shape)

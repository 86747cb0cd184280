"""The VAE's networks (method=vae, after LordAlucard90's Keras model; see anomaly/methods/vae.py),
sized from the image side.

- encoder: Conv 3×3 ReLU, then two branches, one with 2×2 max pooling and one with 2×2 average
  pooling ('same' padding: 28 → 14 → 7 → 4), each (pool → Conv ReLU → dropout)× … → pool; the two
  small maps concatenated → Dense ReLU → μ and log σ² (linear);
- decoder: Dense ReLU → Dense ReLU → small map → dropout → two branches, one upsampling by
  repetition with Conv ReLU layers, one with transposed Conv ReLU layers, concatenated → Conv
  ReLU → Conv to C channels (logits: no sigmoid).

Each network lists in `regularised` the layers the published model's Keras L2 applied to.
`keras_init` gives Keras's default initialisation (Glorot-uniform weights, zero biases).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomaly import AnomalyError


def pooled_sides(size: int) -> list[int]:
    """The image side before and after each 2×2 'same' pooling, down to ≤ 4: 28 → [28, 14, 7, 4]."""
    if size < 8:
        raise AnomalyError(f"method=vae needs images of side ≥ 8, not {size}: set dataset.image_size")
    sides = [size]
    while sides[-1] > 4:
        sides.append(math.ceil(sides[-1] / 2))
    return sides


def _side(image_shape: Sequence[int]) -> int:
    """The side of a square C×H×W image; refuses others."""
    _, height, side = (int(s) for s in image_shape)
    if height != side:
        raise AnomalyError(f"method=vae needs square images, not {height}×{side}")
    return side


def conv3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3×3 convolution with 'same' padding."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases (Keras's defaults) for every dense / conv layer."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VAEEncoder(nn.Module):
    """x → (μ, log σ²): Conv → max-pool branch ‖ avg-pool branch → Dense → two linear heads."""

    def __init__(self, image_shape: Sequence[int], out_features: int, width: int = 16, hidden: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        channels, size, latent_dim = int(image_shape[0]), _side(image_shape), int(out_features)
        sides = pooled_sides(size)
        stages = len(sides) - 1
        self.stem = nn.Sequential(conv3(channels, width), nn.ReLU())
        self.regularised: list[nn.Module] = []  # the layers Keras's l2 applied to

        def branch(pool: type[nn.Module]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(stages):
                layers.append(pool(2, ceil_mode=True))  # ceil: Keras 'same' pooling, 7 → 4
                if i < stages - 1:
                    conv = conv3(width, width)
                    self.regularised.append(conv)
                    layers += [conv, nn.ReLU(), nn.Dropout(dropout)]
            return nn.Sequential(*layers)

        self.max_branch = branch(nn.MaxPool2d)
        # AvgPool2d with ceil_mode divides a border window by the pixels it covers, as Keras does
        self.avg_branch = branch(nn.AvgPool2d)
        self.dense = nn.Linear(2 * width * sides[-1] ** 2, hidden)
        self.regularised.append(self.dense)
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(x)
        h = torch.cat([self.max_branch(h), self.avg_branch(h)], 1).flatten(1)
        h = F.relu(self.dense(h))
        return self.mean(h), self.log_var(h)


class VAEDecoder(nn.Module):
    """z → logits (B×C×H×W): Dense → Dense → small map → repetition-upsampling branch ‖
    transposed-convolution branch → Conv → Conv to C channels (no sigmoid: logits)."""

    def __init__(self, in_features: int, image_shape: Sequence[int], width: int = 16, hidden: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        latent_dim, channels, size = int(in_features), int(image_shape[0]), _side(image_shape)
        sides = pooled_sides(size)
        self.width, self.side = width, sides[-1]
        self.dense = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                   nn.Linear(hidden, width * sides[-1] ** 2), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        repeat: list[nn.Module] = []
        transposed: list[nn.Module] = []
        for small, big in zip(sides[::-1][:-1], sides[::-1][1:]):
            repeat += [conv3(width, width), nn.ReLU(), nn.Dropout(dropout),
                       nn.Upsample(size=(big, big), mode="nearest")]
            # stride 2, kernel 3, padding 1 gives 2·small − 1 + output_padding: exactly `big`
            transposed += [nn.ConvTranspose2d(width, width, 3, stride=2, padding=1,
                                              output_padding=big - (2 * small - 1)),
                           nn.ReLU(), nn.Dropout(dropout)]
        repeat += [conv3(width, width), nn.ReLU()]
        transposed += [nn.ConvTranspose2d(width, width, 3, padding=1), nn.ReLU()]
        self.repeat_branch = nn.Sequential(*repeat)
        self.transposed_branch = nn.Sequential(*transposed)
        self.merge = nn.Sequential(conv3(2 * width, width), nn.ReLU(), conv3(width, channels))
        self.regularised: list[nn.Module] = [
            m for m in [*self.dense, *self.repeat_branch, *self.transposed_branch]
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(z).view(-1, self.width, self.side, self.side))
        return self.merge(torch.cat([self.repeat_branch(h), self.transposed_branch(h)], 1))

"""Deep SVDD's LeNet-type networks (Ruff et al., ICML 2018; lukasruff/Deep-SVDD-PyTorch), sized
from the image shape.

Encoder: per stage a 5×5 convolution (padding 2, no bias) → BatchNorm without affine parameters
(eps 1e-4) → LeakyReLU (slope 0.01) → 2×2 max-pool; then one dense layer without bias to the
representation (`rep_dim`). Nothing in it has a bias term or a bounded activation: Deep SVDD
needs both absent, or the network could map every image onto the centre (the hypersphere
collapse). The decoder (for the autoencoder pretraining) mirrors it: the representation seeds a
4×4 map of rep_dim/16 channels, then 5×5 transposed convolutions without bias, BatchNorm without
affine and LeakyReLU, each doubling the side by nearest-neighbour interpolation, and a sigmoid.

Presets (`lenet_preset`), by the number of channels, as the published code's two networks:
- 1 channel (MNIST_LeNet): stages of 8 and 4 channels, rep_dim 32; the decoder applies LeakyReLU
  to the representation and upsamples before each of its 3 transposed convolutions (4 → 8 → 16 →
  28: the one before the last upsampling trims 16 to 14 with padding 3).
- otherwise (CIFAR10_LeNet): stages of 32, 64 and 128 channels, rep_dim 128; the decoder starts
  with BatchNorm1d (no affine) on the representation — the published autoencoder has it after its
  dense layer, a layer the Deep SVDD network then lacks: it is parameter-free, so here it belongs
  to the decoder and the encoders of both stages are one network — and convolution weights start
  Xavier-uniform with LeakyReLU's gain (`lenet_xavier_init`).
Other sizes follow the same rules: the decoder upsamples as often as 4·2^u ≥ side needs (before
its last u transposed convolutions) and trims the surplus at the one before the last upsampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomaly import AnomalyError

BN_EPS = 1e-4  # the published networks' BatchNorm eps
SEED_SIDE = 4  # the decoder's first feature map is SEED_SIDE × SEED_SIDE


@dataclass(frozen=True)
class LeNetPreset:
    """The published network for images of this many channels."""

    widths: tuple[int, ...]
    rep_dim: int
    latent_norm: bool  # BatchNorm1d on the representation, first in the decoder
    xavier: bool  # Xavier-uniform convolution weights in the autoencoder


MNIST_LENET = LeNetPreset(widths=(8, 4), rep_dim=32, latent_norm=False, xavier=False)
CIFAR10_LENET = LeNetPreset(widths=(32, 64, 128), rep_dim=128, latent_norm=True, xavier=True)


def lenet_preset(channels: int) -> LeNetPreset:
    """MNIST_LeNet for grey images, CIFAR10_LeNet for colour."""
    return MNIST_LENET if channels == 1 else CIFAR10_LENET


def _shape(image_shape: Sequence[int], widths: Sequence[int] | None,
           rep_dim: int | None) -> tuple[int, int, list[int], int]:
    channels, size = int(image_shape[0]), int(image_shape[-1])
    preset = lenet_preset(channels)
    widths = [int(w) for w in (preset.widths if widths is None else widths)]
    rep_dim = preset.rep_dim if rep_dim is None else int(rep_dim)
    if not widths or min(widths) < 1 or rep_dim < 1:
        raise AnomalyError(f"LeNet widths {widths} and rep_dim {rep_dim}: give at least one stage width ≥ 1 "
                           "and a rep_dim ≥ 1")
    if size // 2 ** len(widths) < 1:
        raise AnomalyError(f"{len(widths)} LeNet stages (widths {widths}) pool {size}×{size} images below 1×1: "
                           "give fewer encoder_widths or a larger dataset.image_size")
    return channels, size, widths, rep_dim


class LeNetEncoder(nn.Module):
    """x (B×C×H×H) → B×rep_dim. widths: the stages' channels from the input side (None: the
    preset's); rep_dim: None = the preset's."""

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] | None = None,
                 rep_dim: int | None = None, negative_slope: float = 0.01) -> None:
        super().__init__()
        channels, size, self.widths, self.rep_dim = _shape(image_shape, widths, rep_dim)
        layers: list[nn.Module] = []
        prev = channels
        for w in self.widths:
            layers += [nn.Conv2d(prev, w, 5, padding=2, bias=False), nn.BatchNorm2d(w, eps=BN_EPS, affine=False),
                       nn.LeakyReLU(negative_slope), nn.MaxPool2d(2, 2)]
            prev = w
        side = size // 2 ** len(self.widths)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(prev * side * side, self.rep_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def decoder_layout(size: int, stages: int) -> tuple[int, int, int]:
    """(upsamplings u, index of the trimming transposed convolution or -1, its padding) of a
    decoder with stages + 1 transposed convolutions for images of side `size`."""
    ups = max(0, math.ceil(math.log2(size / SEED_SIDE))) if size > SEED_SIDE else 0
    surplus = SEED_SIDE * 2 ** ups - size
    convs = stages + 1
    if ups > convs:
        raise AnomalyError(f"{stages} LeNet stages cannot decode {size}×{size} images (from {SEED_SIDE}×{SEED_SIDE} "
                           f"that takes {ups} upsamplings, one per transposed convolution at most): give at least "
                           f"{ups - 1} encoder_widths")
    if surplus == 0:
        return ups, -1, 2
    # trimmed at the transposed convolution before the last upsampling (the published MNIST net: 16 → 14)
    if size % 2 or surplus % 4 or ups < 1 or convs < 2:
        raise AnomalyError(f"the LeNet decoder cannot produce {size}×{size} images (it doubles a {SEED_SIDE}×"
                           f"{SEED_SIDE} map): use an even side such as 16, 28 or 32 (dataset.image_size)")
    return ups, convs - 2, 2 + surplus // 4


class LeNetDecoder(nn.Module):
    """B×in_features → B×C×H×H in (0, 1): the mirror of `LeNetEncoder` (see the module docstring).
    widths: the encoder's (mirrored here); in_features: the encoder's rep_dim (None: the preset's),
    a multiple of 16 (a 4×4 seed map); latent_norm: None = the preset's."""

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] | None = None,
                 in_features: int | None = None, latent_norm: bool | None = None,
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        channels, size, widths, self.rep_dim = _shape(image_shape, widths, in_features)
        if self.rep_dim % SEED_SIDE**2:
            raise AnomalyError(f"LeNet rep_dim={self.rep_dim}: the decoder needs a multiple of {SEED_SIDE**2} "
                               f"(it starts from a {SEED_SIDE}×{SEED_SIDE} map)")
        ups, self.trim_at, trim_padding = decoder_layout(size, len(widths))
        self.negative_slope = negative_slope
        self.latent_norm = (nn.BatchNorm1d(self.rep_dim, eps=BN_EPS, affine=False)
                            if (lenet_preset(channels).latent_norm if latent_norm is None else latent_norm)
                            else nn.Identity())
        outs = [*reversed(widths), channels]
        ins = [self.rep_dim // SEED_SIDE**2, *outs[:-1]]
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(i, o, 5, padding=trim_padding if k == self.trim_at else 2, bias=False)
            for k, (i, o) in enumerate(zip(ins, outs)))
        self.norms = nn.ModuleList(nn.BatchNorm2d(o, eps=BN_EPS, affine=False) for o in outs[:-1])
        self.first_upsampled = len(outs) - ups  # the transposed convolutions from here on follow an upsampling

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.latent_norm(z).reshape(len(z), -1, SEED_SIDE, SEED_SIDE)
        x = F.leaky_relu(x, self.negative_slope)
        for k, deconv in enumerate(self.deconvs):
            if k >= self.first_upsampled:
                x = F.interpolate(x, scale_factor=2)
            x = deconv(x)
            if k < len(self.norms):
                x = F.leaky_relu(self.norms[k](x), self.negative_slope)
        return torch.sigmoid(x)


def lenet_xavier_init(*modules: nn.Module) -> None:
    """Xavier-uniform weights with LeakyReLU's gain for every (transposed) convolution: the
    published CIFAR-10 autoencoder's initialisation (dense layers keep PyTorch's default)."""
    gain = nn.init.calculate_gain("leaky_relu")
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight, gain=gain)

"""DCGAN-style convolutional encoder / decoder, sized from the image shape.

An image of side H = 4·2^n goes through n stride-2 convolutions (4×4 kernels, padding 1) down to
4×4, then one 4×4 valid convolution to a 1×1 map of `out_features` channels; the decoder mirrors
it with transposed convolutions. For 32×32 this is exactly GPND's / DCGAN's layout.
`ConvAutoencoder` chains the two (encoder → latent vector → decoder) as one network.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from anomaly import AnomalyError

class HalfTanh(nn.Module):
    """tanh(x)·½ + ½: GPND's 2018 generator output in [0, 1] (= sigmoid(2x), so it starts twice
    as steep as a sigmoid on the same initial weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 0.5 + 0.5


ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "half_tanh": HalfTanh, "none": nn.Identity}


def num_scales(image_size: int) -> int:
    """Number of stride-2 stages for a square image of this side (8, 16, 32, 64, … allowed)."""
    n = int(round(math.log2(image_size))) - 2 if image_size > 0 else -1
    if n < 1 or 4 * 2**n != image_size:
        raise AnomalyError(f"image size {image_size} does not fit the convolutional networks: "
                           "use a power of two ≥ 8 (8, 16, 32, 64, 128), e.g. dataset.image_size=32")
    return n


def default_widths(n: int, base_width: int, max_width: int = 512) -> list[int]:
    """Channel widths doubling per stage: base, 2·base, … (capped)."""
    return [min(base_width * 2**i, max_width) for i in range(n)]


def _check_widths(widths: Sequence[int] | None, n: int, base_width: int, image_size: int) -> list[int]:
    if widths is None:
        return default_widths(n, base_width)
    widths = [int(w) for w in widths]
    if len(widths) != n:
        raise AnomalyError(f"{len(widths)} stage widths {widths} fit {4 * 2 ** len(widths)}×"
                           f"{4 * 2 ** len(widths)} images, not {image_size}×{image_size}: set "
                           f"dataset.image_size={4 * 2 ** len(widths)} or give {n} widths")
    return widths


class ConvEncoder(nn.Module):
    """x (B×C×H×H) → B×out_features. Conv(4,2,1)+LReLU(0.2) [no BN on the first, as DCGAN] …
    → Conv(4,1,0). `widths` are the stage widths from the input side (GPND: 64, 256, 512)."""

    def __init__(self, image_shape: Sequence[int], out_features: int,
                 widths: Sequence[int] | None = None, base_width: int = 64,
                 batch_norm: bool = True, negative_slope: float = 0.2) -> None:
        super().__init__()
        in_channels, image_size = int(image_shape[0]), int(image_shape[-1])
        n = num_scales(image_size)
        self.widths = _check_widths(widths, n, base_width, image_size)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(self.widths):
            layers.append(nn.Conv2d(prev, w, 4, 2, 1, bias=not (batch_norm and i > 0)))
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(negative_slope))
            prev = w
        layers.append(nn.Conv2d(prev, out_features, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ConvDecoder(nn.Module):
    """z (B×in_features) → B×C×H×H. ConvT(4,1,0) to 4×4, then ConvT(4,2,1) stages, each
    +BN+ReLU but the last; `widths` from the 4×4 side (GPND: 256, 256, 128)."""

    def __init__(self, in_features: int, image_shape: Sequence[int],
                 widths: Sequence[int] | None = None, base_width: int = 64,
                 batch_norm: bool = True, output: str = "sigmoid") -> None:
        super().__init__()
        out_channels, image_size = int(image_shape[0]), int(image_shape[-1])
        n = num_scales(image_size)
        if widths is None:
            widths = list(reversed(default_widths(n, base_width)))
        self.widths = _check_widths(widths, n, base_width, image_size)
        if output not in ACTIVATIONS:
            raise AnomalyError(f"decoder output {output!r}; choose one of {sorted(ACTIVATIONS)}")

        def block(conv: nn.Module, width: int) -> list[nn.Module]:
            return [conv, *( [nn.BatchNorm2d(width)] if batch_norm else []), nn.ReLU()]

        layers = block(nn.ConvTranspose2d(in_features, self.widths[0], 4, 1, 0, bias=not batch_norm),
                       self.widths[0])
        for prev, w in zip(self.widths[:-1], self.widths[1:]):
            layers += block(nn.ConvTranspose2d(prev, w, 4, 2, 1, bias=not batch_norm), w)
        layers += [nn.ConvTranspose2d(self.widths[-1], out_channels, 4, 2, 1), ACTIVATIONS[output]()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class ConvAutoencoder(nn.Module):
    """ConvEncoder → latent vector → ConvDecoder as one network (ADAE's G and D are two of these).
    The arguments are ConvEncoder's and ConvDecoder's; `negative_slope` is the encoder's."""

    def __init__(self, image_shape: Sequence[int], latent_dim: int,
                 encoder_widths: Sequence[int] | None = None, decoder_widths: Sequence[int] | None = None,
                 base_width: int = 64, batch_norm: bool = True, negative_slope: float = 0.2,
                 output: str = "sigmoid") -> None:
        super().__init__()
        self.encoder = ConvEncoder(image_shape, latent_dim, encoder_widths, base_width,
                                   batch_norm, negative_slope)
        self.decoder = ConvDecoder(latent_dim, image_shape, decoder_widths, base_width,
                                   batch_norm, output=output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def dcgan_init(module: nn.Module, std: float = 0.02, batch_norm: bool = True) -> None:
    """DCGAN initialisation: conv weights N(0, std), BN weights N(1, std), biases 0.
    batch_norm=False leaves BatchNorm layers at PyTorch's initialisation (weight 1, bias 0), as
    GPND's 2018 code did."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and batch_norm:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)

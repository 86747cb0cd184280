"""DCGAN networks as AnoGAN (Schlegl et al. 2017) and f-AnoGAN (2019) use them: 5×5 stride-2
(transposed) convolutions between a 4×4 map and the image, sized from the image side.

Generator: z → linear → 4×4×w₀ + BN + ReLU → ConvT(5, 2) stages + BN + ReLU → ConvT(5, 2) to the
image channels, tanh. Discriminator: Conv(5, 2) + LReLU(0.2) (no normalisation on the first, as
DCGAN), then Conv(5, 2) + norm + LReLU down to 4×4 → linear. Its last convolutional block's
output, flattened, is the feature map f(x) both papers compare.

For a 64×64 image with the default widths this is exactly the published AnoGAN network
(generator 512 → 256 → 128 → 64 → C, discriminator 64 → 128 → 256 → 512). Smaller images drop
stages from the image side, so the 4×4 ends stay 512 wide: 32×32 has generator 512 → 256 → 128
and discriminator 128 → 256 → 512.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from anomaly import AnomalyError
from anomaly.nets.mlp import frozen

# image side → number of stride-2 stages between it and the 4×4 map
DCGAN_SIZES = {16: 2, 32: 3, 64: 4}
NORMS = ("batch", "layer", "none")


def dcgan_stages(image_shape: Sequence[int]) -> int:
    """Stride-2 stages for a C×H×W image; refuses sizes these networks are not built for."""
    _, height, width = (int(s) for s in image_shape)
    if height != width or height not in DCGAN_SIZES:
        sizes = ", ".join(str(s) for s in DCGAN_SIZES)
        raise AnomalyError(f"image size {height}×{width} does not fit the DCGAN networks: use a square "
                           f"image of side {sizes} (e.g. dataset.image_size=32)")
    return DCGAN_SIZES[height]


def _widths(widths: Sequence[int] | None, top_width: int, n: int, what: str) -> list[int]:
    """Stage widths from the 4×4 side: given, or `top_width` halving per stage."""
    if widths is None:
        widths = [max(int(top_width) // 2**i, 1) for i in range(n)]
    widths = [int(w) for w in widths]
    if len(widths) != n or any(w <= 0 for w in widths):
        raise AnomalyError(f"{what} widths {widths}: need {n} positive widths for this image size "
                           f"({4 * 2 ** n}×{4 * 2 ** n}), from the 4×4 side")
    return widths


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width)
    if kind == "layer":  # per image over C×H×W with a per-channel affine (WGAN-GP's layer norm)
        return nn.GroupNorm(1, width)
    return nn.Identity()


class DCGANGenerator(nn.Module):
    """z (B×in_features) → image (B×C×H×W) in (−1, 1). `widths` from the 4×4 side."""

    def __init__(self, in_features: int, image_shape: Sequence[int], widths: Sequence[int] | None = None,
                 top_width: int = 512) -> None:
        super().__init__()
        n = dcgan_stages(image_shape)
        channels = int(image_shape[0])
        self.widths = _widths(widths, top_width, n, "generator")
        self.latent_dim = int(in_features)
        # no bias before a BatchNorm: its shift would be removed by the normalisation
        self.project = nn.Linear(self.latent_dim, 16 * self.widths[0], bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(self.widths[0]), nn.ReLU()]
        for prev, w in zip(self.widths[:-1], self.widths[1:]):  # each doubles the side (TF "SAME")
            layers += [nn.ConvTranspose2d(prev, w, 5, 2, padding=2, output_padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU()]
        layers += [nn.ConvTranspose2d(self.widths[-1], channels, 5, 2, padding=2, output_padding=1),
                   nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).reshape(len(z), self.widths[0], 4, 4))


class DCGANDiscriminator(nn.Module):
    """x (B×C×H×W) → B×out_features (logits, or an encoder's pre-activation). `widths` from the
    4×4 side (the generator's order); `norm` on every conv block but the first: batch (DCGAN),
    layer (per-image, for the gradient penalty) or none."""

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] | None = None,
                 top_width: int = 512, norm: str = "batch", negative_slope: float = 0.2,
                 out_features: int = 1) -> None:
        super().__init__()
        if norm not in NORMS:
            raise AnomalyError(f"discriminator norm {norm!r}; choose one of {list(NORMS)}")
        n = dcgan_stages(image_shape)
        self.widths = _widths(widths, top_width, n, "discriminator")
        self.out_features = int(out_features)
        layers: list[nn.Module] = []
        prev = int(image_shape[0])
        for i, w in enumerate(reversed(self.widths)):  # from the image side
            normed = i > 0 and norm != "none"
            layers.append(nn.Conv2d(prev, w, 5, 2, padding=2, bias=not (normed and norm == "batch")))
            if normed:
                layers.append(_norm(norm, w))
            layers.append(nn.LeakyReLU(negative_slope))
            prev = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(16 * prev, self.out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the last convolutional block's output, flattened (B×16·w₀)."""
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out.reshape(-1) if self.out_features == 1 else out


class DCGANEncoder(nn.Module):
    """f-AnoGAN's izi_f encoder: the discriminator's topology with an out_features (latent) output, tanh."""

    def __init__(self, image_shape: Sequence[int], out_features: int, widths: Sequence[int] | None = None,
                 top_width: int = 512, norm: str = "layer", negative_slope: float = 0.2) -> None:
        super().__init__()
        self.net = DCGANDiscriminator(image_shape, widths, top_width, norm, negative_slope,
                                      out_features=out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


@contextmanager
def frozen_inference(*modules: nn.Module) -> Iterator[None]:
    """Inside the block these modules are fixed functions: no parameter gradients (gradients still
    reach their inputs), normalisation layers use their running statistics and update none (so
    images of a batch do not interact and the buffers stay as they are). On exit every submodule
    is back in the train / eval mode it had."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        with frozen(*modules):
            yield
    finally:
        for m, training in modes:
            m.training = training

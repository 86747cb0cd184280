"""Convolutional autoencoder scored by reconstruction error (`method=ae`).

The plain baseline every paper here compares against; with `noise_std > 0` it is the denoising
autoencoder (DAE) baseline of ARAE. `net=mlp` uses ARAE's fully connected network (sigmoid
layers, Glorot init) so that ARAE and the DAE differ only in training.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from anomaly import AnomalyError
from anomaly.methods.base import AnomalyModule
from anomaly.nets import ConvDecoder, ConvEncoder, DenseDecoder, DenseEncoder, dcgan_init

NETS = ("conv", "mlp")


class Autoencoder(AnomalyModule):
    """encoder → latent → decoder, trained with MSE to reconstruct the (clean) input.

    net: "conv" (ConvEncoder / ConvDecoder, DCGAN init) or "mlp" (DenseEncoder / DenseDecoder,
    ARAE's network; `encoder_widths` are then its hidden widths from the input side, default
    512, 256, `decoder_widths` from the latent side, default the mirror; base_width and
    batch_norm do not apply).

    Score: mean squared reconstruction error per image.
    """

    name = "ae"

    def __init__(self, image_shape: Sequence[int], latent_dim: int = 32,
                 encoder_widths: Sequence[int] | None = None,
                 decoder_widths: Sequence[int] | None = None, base_width: int = 32,
                 batch_norm: bool = True, noise_std: float = 0.0, lr: float = 1e-3,
                 weight_decay: float = 0.0, net: str = "conv", **base) -> None:
        super().__init__(image_shape, **base)
        if net not in NETS:
            raise AnomalyError(f"method.net={net!r}; choose one of {list(NETS)}")
        self.net_kind = net
        channels, size, _ = self.image_shape
        if net == "mlp":
            hidden = list(encoder_widths) if encoder_widths is not None else [512, 256]
            self.encoder = DenseEncoder(math.prod(self.image_shape), latent_dim, hidden)
            self.decoder = DenseDecoder(latent_dim, self.image_shape,
                                        list(decoder_widths) if decoder_widths is not None else hidden[::-1],
                                        output=self.output_activation)
        else:
            self.encoder = ConvEncoder(channels, size, latent_dim, encoder_widths, base_width, batch_norm)
            self.decoder = ConvDecoder(latent_dim, channels, size, decoder_widths, base_width, batch_norm,
                                       output=self.output_activation)
            dcgan_init(self)
        self.noise_std = float(noise_std)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        noisy = x if self.noise_std <= 0 else self.clamp_to_range(x + self.noise_std * torch.randn_like(x))
        loss = F.mse_loss(self(noisy), x)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (self(x) - x).pow(2).flatten(1).mean(1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

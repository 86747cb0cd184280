"""Convolutional autoencoder scored by reconstruction error (`method=ae`).

The plain baseline every paper here compares against; with `noise_std > 0` it is the denoising
autoencoder (DAE) baseline of ARAE. Its networks are injected (`method.encoder`,
`method.decoder`; conf/net/ae/): `conv` (the default) or `net/ae@method=mlp`, ARAE's fully
connected network (sigmoid layers, Glorot init) so that ARAE and the DAE differ only in training.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from anomaly.methods.base import AnomalyModule
from anomaly.nets import ConvDecoder, ConvEncoder, dcgan_init
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.settings.rules import LatentDim, LearningRate, NonNegative

class Autoencoder(AnomalyModule):
    """encoder → latent → decoder, trained with MSE to reconstruct the (clean) input.

    encoder: images → latent_dim; decoder: latent_dim → images, ending in the value range's
    activation (both injected; see anomaly/nets/build.py). init: dcgan re-initialises every
    (transposed) convolution and dense layer N(0, 0.02) after both are built (the conv nets');
    none keeps the networks' own.

    Score: mean squared reconstruction error per image.
    """

    name = "ae"

    def __init__(self, image_shape: Sequence[int], latent_dim: LatentDim = 32,
                 encoder: NetSpec = partial(ConvEncoder, base_width=32),
                 decoder: NetSpec = partial(ConvDecoder, base_width=32), init: Literal["dcgan", "none"] = "dcgan",
                 noise_std: NonNegative = 0.0, lr: LearningRate = 1e-3, weight_decay: NonNegative = 0.0,
                 **base) -> None:
        super().__init__(image_shape, **base)
        shape, n = self.image_shape, int(latent_dim)
        self.encoder = build_net(encoder, "encoder", self.name, image_shape=shape, out_features=n)
        self.decoder = build_net(decoder, "decoder", self.name, in_features=n, image_shape=shape,
                                 output=self.output_activation)
        expect_output(self.encoder, "encoder", self.name, shape, (n,), "the latent: method.latent_dim")
        expect_output(self.decoder, "decoder", self.name, (n,), shape, "an image")
        if init == "dcgan":
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

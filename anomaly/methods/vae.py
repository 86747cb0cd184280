"""Variational autoencoder novelty detection (`method=vae`), after LordAlucard90's
"Variational-AutoEncoder-For-Novelty-Detection" (Keras, EMNIST letters, class A normal with 3 %
impurities; see ../shared/PAPERS.md). The OC-SVM it was compared with is `method=ocsvm`.

A convolutional VAE is trained on the (contaminated) training set; impurities reconstruct badly.
Score: the mean squared reconstruction error per image (`score=mse`, the published score) or the
negative ELBO (`score=elbo`: Σ pixel BCE + KL). The published threshold, the (1 − contamination)
quantile of the training + validation scores, is `threshold=contamination_quantile` (the
threshold `protocol=contamination` picks).

Faithful to the published model at 28×28 in its layout and sizes (the networks are
anomaly.nets.vae's VAEEncoder / VAEDecoder):
- encoder: Conv16 3×3 ReLU, then two branches, one with 2×2 max pooling and one with 2×2
  average pooling ('same' padding: 28 → 14 → 7 → 4), each (pool → Conv16 ReLU → dropout)× 2 →
  pool; the two 4×4×16 maps concatenated → Dense 128 ReLU → μ and log σ² (linear, `latent_dim`,
  the published best 32);
- decoder: Dense 128 ReLU → Dense 16·4·4 ReLU → 4×4×16 → dropout → two branches, one
  upsampling by repetition with Conv16 ReLU layers, one with transposed Conv16 ReLU layers,
  concatenated → Conv16 ReLU → Conv(C) sigmoid;
- Keras-style L2 (`l2`: l2·Σw² added to the loss) on the kernels the published model
  regularised (every branch convolution and the Dense 128 / 256 layers; not the first
  convolution, μ, log σ² or the last two convolutions), dropout (`dropout`) after most branch
  convolutions, Glorot-uniform weights and zero biases (the Keras defaults);
- loss = C·H·W · mean BCE + KL(q(z|x) ‖ N(0, I)), averaged over the batch; RMSprop lr 1e-3 with
  Keras's ρ 0.9 and ε 1e-7; batch 128 in the experiment config.

Deliberate differences and bug fixes:
- Reparametrisation (fix): z = μ + exp(½ log σ²)·ε, so that z has variance σ². The published
  `_sampling` used exp(log σ²)·ε, i.e. standard deviation σ² (variance σ⁴), which no longer
  matches the KL term the loss charges for σ².
- Score without sampling noise: the published scores came from `model.predict`, which samples z
  (with the bug above), so a test image's score was random. Here z = μ (`score_samples=0`, the
  default) or the mean over `score_samples` draws of z.
- Sized from the image shape: the pooling stages run until the side is ≤ 4 (16 → 8 → 4;
  28 → 14 → 7 → 4; 32 → 16 → 8 → 4; 64 → … → 4) and the decoder returns through the same sides
  in reverse: the repetition branch upsamples to each side (nearest), the transposed branch
  uses stride-2 transposed convolutions sized to each side. The published decoder reached 28
  with valid convolutions (4 → 6 → 12 → 14 → 28 and 16 → 14), which fit 28×28 only. C channels
  in and out (the published model was grey-scale only).
- The BCE is computed from logits (the sigmoid is applied in `reconstruct`): the same loss
  without Keras's clipping of probabilities at 1e-7.
- Model selection: the published run kept the epoch with the lowest (contaminated) validation
  loss over 300 epochs; here the last epoch is used, as for every method.
"""

from __future__ import annotations

from typing import Annotated, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F

from anomaly import AnomalyError
from anomaly.methods.base import AnomalyModule
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.nets.vae import VAEDecoder, VAEEncoder, keras_init
from anomaly.settings.rules import FRACTION, Count, Int, LatentDim, LearningRate, Net, NonNegative

# the networks' settings beyond the shared ones (anomaly.settings.rules): the channels of every
# convolution, the dense layer's width, the dropout rate
Conv = Annotated[NetSpec, Net(width=Int(low=1), hidden=Int(low=1), dropout=FRACTION)]


def reparametrise(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """z = μ + σ·ε, σ = exp(½ log σ²), ε ~ N(0, I) (the published code had exp(log σ²): a bug)."""
    return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample: −½ Σ (1 + log σ² − μ² − σ²)."""
    return -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(1)


def reconstruction_bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ over pixels of the binary cross-entropy per sample (= pixels × the mean BCE)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


class VAE(AnomalyModule):
    """Convolutional VAE (see the module docstring). Inputs in [0, 1] (value_range unit).

    latent_dim: size of z (the published `hidden`, grid 2…64, best 32); encoder: images → (μ,
    log σ²), decoder: z → logits (injected; the defaults' settings: width, the channels of every
    convolution (16); hidden, the dense layer's width (128); dropout, the rate after most
    convolutions (0 = off)); l2: Keras-style kernel penalty l2·Σw² on the layers a net lists in
    `regularised` (published grid 0.1…1e-5; 0 = off); score: "mse" or "elbo"; score_samples: 0
    scores with z = μ, n > 0 averages n draws of z.
    """

    name = "vae"
    def __init__(self, image_shape: Sequence[int], latent_dim: LatentDim = 32, encoder: Conv = VAEEncoder,
                 decoder: Conv = VAEDecoder, l2: NonNegative = 0.0, lr: LearningRate = 1e-3,
                 score: Literal["mse", "elbo"] = "mse", score_samples: Count = 0, **base) -> None:
        super().__init__(image_shape, **base)
        if self.value_range != "unit":
            raise AnomalyError(f"method=vae needs method.value_range=unit, not {self.value_range!r} "
                               "(its loss is a binary cross-entropy on [0, 1] pixels)")
        shape, n = self.image_shape, int(latent_dim)
        self.encoder = build_net(encoder, "encoder", self.name, image_shape=shape, out_features=n)
        self.decoder = build_net(decoder, "decoder", self.name, in_features=n, image_shape=shape)
        expect_output(self.decoder, "decoder", self.name, (n,), shape, "logits of an image")
        keras_init(self)
        self.l2 = float(l2)
        self.lr = float(lr)
        self.score_kind = score
        self.score_samples = int(score_samples)

    # ---- training -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits of the reconstruction from a sampled z, μ, log σ²)."""
        mean, log_var = self.encoder(x)
        return self.decoder(reparametrise(mean, log_var)), mean, log_var

    def regularised_weights(self) -> Iterator[torch.Tensor]:
        for m in [*getattr(self.encoder, "regularised", ()), *getattr(self.decoder, "regularised", ())]:
            yield m.weight

    def l2_penalty(self) -> torch.Tensor:
        return sum((w.pow(2).sum() for w in self.regularised_weights()), torch.zeros((), device=self.device))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        logits, mean, log_var = self(x)
        reconstruction = reconstruction_bce(logits, x).mean()
        kl = kl_divergence(mean, log_var).mean()
        loss = reconstruction + kl
        if self.l2 > 0:
            loss = loss + self.l2 * self.l2_penalty()
        self.log_dict({"train/reconstruction": reconstruction, "train/kl": kl},
                      on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        return torch.optim.RMSprop(self.parameters(), lr=self.lr, alpha=0.9, eps=1e-7)

    # ---- scoring ---------------------------------------------------------------------------------
    def _codes(self, mean: torch.Tensor, log_var: torch.Tensor) -> list[torch.Tensor]:
        if self.score_samples == 0:
            return [mean]
        return [reparametrise(mean, log_var) for _ in range(self.score_samples)]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self.encoder(x)
        return torch.sigmoid(self.decoder(mean))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.encoder(x)
        per_code = []
        for z in self._codes(mean, log_var):
            logits = self.decoder(z)
            if self.score_kind == "mse":
                per_code.append((torch.sigmoid(logits) - x).pow(2).flatten(1).mean(1))
            else:
                per_code.append(reconstruction_bce(logits, x))
        value = torch.stack(per_code).mean(0)
        return value + kl_divergence(mean, log_var) if self.score_kind == "elbo" else value

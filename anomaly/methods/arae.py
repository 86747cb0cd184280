"""ARAE: Adversarially Robust Training of Autoencoders Improves Novelty Detection
(Salehi, Arya, Pajoum, Otoofi, Shaeiri, Rohban & Rabiee, arXiv 2003.05669; Neural Networks 2021).

An autoencoder trained on the normal class to reconstruct each clean image from an adversarial
version of it: the attack looks for the perturbation inside a small ball that moves the image's
latent code the most, and the loss asks the decoder to undo it and the encoder to be stable
under it. The latent space then keeps only the robust, semantic features of the normal class, so
anomalies reconstruct badly. Score: the reconstruction error of the clean input.

Faithful to the paper (`attack=linf`, the default):
- network (`net=mlp`): C·H·W → 512 → 256 → latent 128, mirrored decoder, a sigmoid after every
  layer (latent and output included), Glorot-normal weights, zero biases;
- attack: L∞ PGD maximising ‖E(x+δ) − E(x)‖², δ ~ U(−ε, ε) start, step α = 2.5 ε / steps on the
  gradient's sign, δ projected to [−ε, ε], x+δ clipped to [0, 1]; MNIST ε 0.2 / 40 steps,
  Fashion-MNIST 0.05 / 40 (experiment configs; the code defaults are MNIST's);
- loss MSE(D(E(x_adv)), x) + γ · MSE(E(x), E(x_adv)), γ 0.1, gradients through both encoder
  passes; Adam lr 1e-3; score Σ (D(E(x)) − x)² per image, no attack at test time.

`attack=union` is the published PyTorch "MNIST-union" model: an L2 PGD (ε 5, α 0.1, 100 steps,
step along the per-sample normalised gradient, random start in the ε-ball), an L∞ PGD (ε 0.2,
α 0.01, 40 steps) and the worst of a grid of rotations (−30°…30°, 31 angles) × shifts
({−4/28, 0, 4/28}² of the image side), all maximising the latent shift; latent weight 0.2. The
published code trains on all three adversarial batches at once (`union_combine=all`, the
default); `union_combine=worst` keeps, per image, the one of the three with the largest latent
shift. That code's network was a ReLU MLP with a linear output: `activation=relu output=none`.
Its score was the mean squared error, which ranks as the sum used here.

Deliberate differences and bug fixes:
- Attack gradient leak (fix): the published union code ran each attack step's backward pass
  through the model's parameters after `optimizer.zero_grad()`, so the last attack step's
  parameter gradients were added to the training step's. Here the attack computes gradients
  with respect to the input only (`torch.autograd.grad`), with the parameters frozen
  (`anomaly.nets.frozen`): no parameter gradient is created or changed by an attack.
- Batch norm during the attack (the conv net only; the MLP has none): the attack runs the
  encoder's BatchNorm layers in eval mode (running statistics), and puts each back in the mode
  it had. Attacking in train mode would make each image's perturbation act through the batch's
  statistics (perturbing the batch, not the image), would let the spatial search compare
  transforms under different chunk statistics, and would push the running statistics 40+
  times per batch toward adversarial batches. Lightning's train/eval state of the module is
  untouched; the training step's own forward passes use batch statistics as usual.
- Attack schedule: each training batch is attacked with the current weights. The published
  Keras code attacked the whole training set once per epoch with the epoch-start weights and
  then fitted one epoch on those fixed examples (1,600 epochs on MNIST, 8,000 on Fashion-MNIST:
  the experiment configs' max_epochs). It also kept δ unclipped by the [0, 1] box between
  steps; here δ is always the feasible one, (x+δ clipped) − x.
- Unseeded shuffling in the published data preparation (prepare.py's "p1" split): the
  framework's protocols (`protocol=anomaly_ratio` is "p1", `one_class` is "p2") are seeded.
- F1 threshold tuned on the test set (published COIL-100 code): the threshold comes from the
  validation split, as for every method (`threshold=f1_inlier`, the paper's inlier-positive F1,
  is what protocol=anomaly_ratio and coil_random pick).
- `net/arae@method=conv` (ConvEncoder / ConvDecoder, DCGAN init, sigmoid output) is an addition
  for RGB and larger images; the paper used the MLP everywhere (COIL-100 at 32×32×3 included).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Annotated, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomaly import AnomalyError
from anomaly.methods.base import AnomalyModule
from anomaly.nets import DenseDecoder, DenseEncoder, dcgan_init, frozen
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.settings.rules import (AtLeastOne, Count, Ints, LatentDim, LearningRate, Net, NonNegative,
                                    positive)

# the networks (conf/net/arae/): their `hidden` widths beyond the shared settings (anomaly.settings.rules)
Dense = Annotated[NetSpec, Net(hidden=Ints(low=1))]

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


# ---- attacks: plain functions of an encoder and a batch in [0, 1] ---------------------------------
@contextmanager
def attack_mode(encoder: nn.Module) -> Iterator[None]:
    """Inside the block: the encoder's parameters are frozen (gradients reach the input only),
    its BatchNorm layers use running statistics and update none, gradients are enabled. On exit
    every BatchNorm layer is back in the mode it had."""
    batch_norms = [m for m in encoder.modules() if isinstance(m, BATCH_NORMS)]
    modes = [m.training for m in batch_norms]
    try:
        for m in batch_norms:
            m.eval()
        with frozen(encoder), torch.enable_grad():
            yield
    finally:
        for m, mode in zip(batch_norms, modes):
            m.train(mode)


def latent_shift(encoder: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖E(x) − target‖² per sample."""
    return (encoder(x) - target).pow(2).flatten(1).sum(1)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """B values shaped to broadcast over a B×… batch."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def pgd_linf_latent(encoder: nn.Module, x: torch.Tensor, eps: float, steps: int,
                    alpha: float | None = None) -> torch.Tensor:
    """L∞ PGD maximising ‖E(x+δ) − E(x)‖²: δ ~ U(−ε, ε) start, `steps` sign-gradient steps of
    `alpha` (default 2.5 ε / steps), δ projected to [−ε, ε] and x+δ clipped to [0, 1] after each.
    Returns x+δ, detached."""
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    x = x.detach()
    with attack_mode(encoder):
        with torch.no_grad():
            target = encoder(x)
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(latent_shift(encoder, x_adv, target).sum(), x_adv)
            stepped = x_adv.detach() + alpha * grad.sign()
            x_adv = (x + (stepped - x).clamp(-eps, eps)).clamp(0.0, 1.0)
    return x_adv.detach()


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norms = delta.flatten(1).norm(dim=1)
    return delta * _per_sample((eps / norms.clamp_min(1e-12)).clamp(max=1.0), delta)


def pgd_l2_latent(encoder: nn.Module, x: torch.Tensor, eps: float, steps: int,
                  alpha: float) -> torch.Tensor:
    """L2 PGD maximising ‖E(x+δ) − E(x)‖², as the published union code: δ starts as U(−½, ½)
    noise pulled into the ε-ball, each step moves `alpha` along the per-sample normalised
    gradient, then δ is projected onto the ε-ball and x+δ clipped to [0, 1]. Returns x+δ, detached."""
    x = x.detach()
    with attack_mode(encoder):
        with torch.no_grad():
            target = encoder(x)
        x_adv = (x + _project_l2(torch.rand_like(x) - 0.5, eps)).clamp(0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(latent_shift(encoder, x_adv, target).sum(), x_adv)
            grad_norm = _per_sample(grad.flatten(1).norm(dim=1), grad)
            stepped = x_adv.detach() + alpha * grad / (grad_norm + 1e-10)
            x_adv = (x + _project_l2(stepped - x, eps)).clamp(0.0, 1.0)
    return x_adv.detach()


def _symmetric_grid(limit: float, count: int) -> torch.Tensor:
    """`count` values evenly spaced over [−limit, limit] (one value: 0)."""
    return torch.zeros(1) if count == 1 else torch.linspace(-limit, limit, count)


def spatial_transforms(max_rotation: float = 30.0, rotations: int = 31, max_shift: float = 4 / 28,
                       shifts: int = 3) -> torch.Tensor:
    """T×2×3 affine matrices (F.affine_grid's convention, align_corners=True) for every
    rotation × horizontal shift × vertical shift of the grid: rotations in degrees over
    [−max_rotation, max_rotation], shifts as fractions of the image side over
    [−max_shift, max_shift]. T = rotations · shifts²."""
    angles = torch.deg2rad(_symmetric_grid(max_rotation, rotations))
    offsets = 2.0 * _symmetric_grid(max_shift, shifts)  # the image spans [−1, 1]: side fraction × 2
    angle, dx, dy = (t.reshape(-1) for t in torch.meshgrid(angles, offsets, offsets, indexing="ij"))
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)


def transform_images(x: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Bilinear warp of image i by thetas[i] (zero padding), both of length B."""
    grid = F.affine_grid(thetas.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0.0, 1.0)


def worst_spatial_transform(encoder: nn.Module, x: torch.Tensor, thetas: torch.Tensor,
                            chunk: int = 64) -> torch.Tensor:
    """Per image, the transform of `thetas` (T×2×3) with the largest latent shift, found by
    encoding every image under `chunk` transforms at a time (B·chunk images per pass). Returns
    the transformed batch, detached.

    Each chunk is one `affine_grid` of `chunk` sampling grids (H×W each, shared by the whole
    batch) and one `grid_sample` that warps every image at once: the batch rides in the channel
    dimension, so the interpolation weights are computed once per transform and pixel, not once
    per image. The warped images are exactly `transform_images(x, theta)` for each theta (the
    same grid values, the same bilinear sums); no gradients are recorded.
    """
    x = x.detach()
    thetas = thetas.to(x.device, x.dtype)
    batch, channels, height, width = x.shape
    planes = x.reshape(1, batch * channels, height, width)  # the batch as channels of one image
    with attack_mode(encoder), torch.no_grad():
        target = encoder(x).reshape(1, batch, -1)
        best_shift = torch.full((batch,), -math.inf, device=x.device)
        best_index = torch.zeros(batch, dtype=torch.long, device=x.device)
        for start in range(0, len(thetas), chunk):
            part = thetas[start:start + chunk]
            n = len(part)
            grid = F.affine_grid(part, [n, 1, height, width], align_corners=True)
            moved = F.grid_sample(planes.expand(n, -1, -1, -1), grid, mode="bilinear",
                                  padding_mode="zeros", align_corners=True).clamp_(0.0, 1.0)
            codes = encoder(moved.reshape(n * batch, channels, height, width)).reshape(n, batch, -1)
            shift = (codes - target).pow(2).sum(2)  # n×B, transform-major
            value, index = shift.max(0)
            better = value > best_shift
            best_shift = torch.where(better, value, best_shift)
            best_index = torch.where(better, index + start, best_index)
        return transform_images(x, thetas[best_index])


# ---- the method ---------------------------------------------------------------------------------
class ARAE(AnomalyModule):
    """Adversarially robust autoencoder (see the module docstring).

    encoder: images → latent_dim, decoder: latent_dim → images (injected, conf/net/arae/: mlp,
    the paper's, `hidden` widths from the input side, `activation` after every layer, `output`
    on the decoder's last; or conv, ConvEncoder / ConvDecoder). init: dcgan re-initialises both
    N(0, 0.02) after they are built (the conv nets'); none keeps the nets' own (the MLP's Glorot).
    attack: "linf" (eps, steps, alpha = null → 2.5·eps/steps; latent_weight) or "union"
    (the union_* settings). Inputs in [0, 1] (value_range unit).
    """

    name = "arae"

    def __init__(self, image_shape: Sequence[int], latent_dim: LatentDim = 128,
                 encoder: Dense = DenseEncoder, decoder: Dense = DenseDecoder,
                 init: Literal["dcgan", "none"] = "none", attack: Literal["linf", "union"] = "linf",
                 eps: NonNegative = 0.2, steps: Count = 40,
                 alpha: Annotated[float | None, positive(null="2.5·eps/steps")] = None,
                 latent_weight: NonNegative = 0.1,
                 union_combine: Literal["all", "worst"] = "all", union_latent_weight: NonNegative = 0.2,
                 union_l2_eps: NonNegative = 5.0, union_l2_alpha: NonNegative = 0.1, union_l2_steps: Count = 100,
                 union_linf_eps: NonNegative = 0.2, union_linf_alpha: NonNegative = 0.01,
                 union_linf_steps: Count = 40, union_max_rotation: NonNegative = 30.0,
                 union_rotations: AtLeastOne = 31, union_max_shift: NonNegative = 4 / 28,
                 union_shifts: AtLeastOne = 3, union_transform_chunk: AtLeastOne = 64,
                 lr: LearningRate = 1e-3, **base) -> None:
        super().__init__(image_shape, **base)
        if self.value_range != "unit":
            raise AnomalyError(f"method=arae needs method.value_range=unit, not {self.value_range!r} "
                               "(the attacks clip to [0, 1])")
        shape, n = self.image_shape, int(latent_dim)
        self.encoder = build_net(encoder, "encoder", self.name, image_shape=shape, out_features=n)
        self.decoder = build_net(decoder, "decoder", self.name, in_features=n, image_shape=shape)
        expect_output(self.encoder, "encoder", self.name, shape, (n,), "the latent: method.latent_dim")
        expect_output(self.decoder, "decoder", self.name, (n,), shape, "an image")
        if init == "dcgan":
            dcgan_init(self)
        self.attack = attack
        self.eps, self.steps = float(eps), int(steps)
        self.alpha = None if alpha is None else float(alpha)
        self.latent_weight = float(latent_weight)
        self.union_combine = union_combine
        self.union_latent_weight = float(union_latent_weight)
        self.union_l2 = (float(union_l2_eps), int(union_l2_steps), float(union_l2_alpha))
        self.union_linf = (float(union_linf_eps), int(union_linf_steps), float(union_linf_alpha))
        self.union_transform_chunk = int(union_transform_chunk)
        # not persistent: rebuilt from the config, follows the module's device
        self.register_buffer("union_transforms", spatial_transforms(
            float(union_max_rotation), int(union_rotations), float(union_max_shift), int(union_shifts)),
            persistent=False)
        self.lr = float(lr)

    # ---- training ------------------------------------------------------------------------------
    def adversarial_examples(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial batch, the clean images it must reconstruct to), both detached. linf and
        union/worst: B images; union/all: 3B (the L2, L∞ and spatial batches in that order)."""
        if self.attack == "linf":
            return pgd_linf_latent(self.encoder, x, self.eps, self.steps, self.alpha), x
        eps, steps, alpha = self.union_l2
        by_l2 = pgd_l2_latent(self.encoder, x, eps, steps, alpha)
        eps, steps, alpha = self.union_linf
        by_linf = pgd_linf_latent(self.encoder, x, eps, steps, alpha)
        by_spatial = worst_spatial_transform(self.encoder, x, self.union_transforms,
                                             self.union_transform_chunk)
        if self.union_combine == "all":
            return torch.cat([by_l2, by_linf, by_spatial]), x.repeat(3, *([1] * (x.dim() - 1)))
        candidates = torch.stack([by_l2, by_linf, by_spatial], 1)  # B×3×C×H×W
        with attack_mode(self.encoder), torch.no_grad():
            target = self.encoder(x)
            shifts = torch.stack([latent_shift(self.encoder, c, target) for c in candidates.unbind(1)], 1)
        worst = candidates[torch.arange(len(x), device=x.device), shifts.argmax(1)]
        return worst, x

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        x_adv, x_target = self.adversarial_examples(x)
        z_adv = self.encoder(x_adv)
        z_clean = self.encoder(x)
        if len(x_target) != len(x):  # union/all: each clean code stands against three attacks
            z_clean = z_clean.repeat(len(x_target) // len(x), 1)
        reconstruction = F.mse_loss(self.decoder(z_adv), x_target)
        latent = F.mse_loss(z_adv, z_clean)
        weight = self.latent_weight if self.attack == "linf" else self.union_latent_weight
        loss = reconstruction + weight * latent
        self.log_dict({"train/reconstruction": reconstruction, "train/latent": latent},
                      on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    # ---- scoring: the clean input, no attack ----------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (self.reconstruct(x) - x).pow(2).flatten(1).sum(1)


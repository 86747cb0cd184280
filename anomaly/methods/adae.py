"""ADAE: Anomaly Detection with Adversarial Dual Autoencoders
(Vu, Ueta, Hashimoto, Maeno, Pranata & Shen, arXiv 1902.06924, 2019).

Two autoencoders of the same architecture play a GAN game: the generator G reconstructs the
input, the discriminator D is an autoencoder that reconstructs real images well and G's
reconstructions badly, and G learns to make reconstructions D reconstructs well:

    L_D = ‖x − D(x)‖₁ − ‖G(x) − D(G(x))‖₁
    L_G = ‖x − G(x)‖₁ + ‖G(x) − D(G(x))‖₁

(per image the mean absolute error over pixels, then the batch mean). Per batch one D update,
then one G update. Score: the discriminator's reconstruction error of G's reconstruction,
‖x − D(G(x))‖₂ per image.

Faithful to the paper: the two losses, one D then one G update per batch, Adam lr 1e-5
β = (0.5, 0.999), batch 64, 100 epochs (experiment=adae_mnist), inputs 32×32 in [−1, 1] with a
tanh output, latent 32 for MNIST (128 for RGB: set method.latent_dim=128), strided conv encoder
with BN + ReLU and a transposed-conv decoder, the L2 score.

Deliberate differences:
- Threshold: the published code set it to mean + 3 std of the *test* normals' scores (it uses
  test labels); here it is fitted on the validation split, as for every method (`threshold.*`).
- Losses (fix, the default): `variant=code`, the published TensorFlow code's losses,
  L_D = |‖x − D(x)‖₁ − 0.5·‖G(x) − D(G(x))‖₁| (the absolute value of the batch-mean loss) and
  L_G = ‖x − G(x)‖₁ + 0.5·‖G(x) − D(G(x))‖₁. The paper's losses (`variant=paper`) leave L_D
  unbounded below: D lowers it by failing on G(x), and since G(x) ≈ x for the normals it learns
  to reconstruct the normals badly, so their score rises and the ranking inverts. Measured on
  MNIST at the paper's settings (lr 1e-5, batch 64, digit 2 the anomaly, 1,015 batches;
  reproduced/curves/adae_mnist_lr1e-5_digit2.json): paper losses, validation AUROC flat at
  0.38–0.39 with the normals' mean score rising 29.6 → 40.4 every epoch and L_D falling 0.54 →
  0.02, test AUROC 0.40; code losses, validation AUROC 0.37 → 0.69 with the normals' score
  falling after epoch 3, test AUROC 0.72 (the paper's 0.948 is after ~75k batches). Other traits
  of the published code (3×3 convs with max-pooling, per-batch min-max scaling, 1,000 training
  images of digit 1) are not reproduced: the paper's setup is.
- Networks (injected: `method.generator`, `method.discriminator`, the latter taking the former's
  settings by default): the framework's DCGAN-style ConvEncoder / ConvDecoder, chained as
  `anomaly.nets.ConvAutoencoder` (4×4 stride-2 convs, widths doubling from `base_width`,
  N(0, 0.02) init); the paper gives no exact widths. The encoder's
  activation is ReLU (`negative_slope=0`, the paper's "BN + ReLU"); as in DCGAN its first conv
  has no BatchNorm.
- G(x) is computed once per batch: detached for the D update, and its graph reused by the G
  update (G's weights do not change in between, so it is the same forward pass the G update
  would make). D(G(x)) is recomputed after the D step, with D's new weights.
- BatchNorm: D sees x and G(x) in separate forward passes (separate batch statistics), and its
  running statistics are also updated by the forward pass of the G update (buffers, not trained
  parameters; D's parameters get neither a step nor a gradient there).

Measured (tests' synthetic set, 16×16, lr 1e-3 to 3e-5, up to 30 epochs): with the paper's
losses L_D is unbounded below, D wins (L_D → −1) by failing on every G(x), and the score
swings between AUROC 0.0 and 0.9 from epoch to epoch. The code variant settles (AUROC ≈ 1.0
after ~20 epochs at lr 1e-3); either of its two changes alone (|L_D|, or the 0.5 weight) also
did. The paper's full schedule (lr 1e-5, 100 epochs on MNIST) was not run here; see the MNIST
curve above for its first 1,015 batches.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, ClassVar, Literal, Sequence

import torch

from anomaly.methods.base import AnomalyModule, ValueRange
from anomaly.nets import ConvAutoencoder, dcgan_init, frozen
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.settings.rules import FRACTION, WIDTHS, Betas, LatentDim, LearningRate, Net

# weight of the second term (‖G(x) − D(G(x))‖₁) of both losses, and whether L_D is taken in
# absolute value, per variant
VARIANTS: dict[str, tuple[float, bool]] = {"paper": (1.0, False), "code": (0.5, True)}


def l1_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over each image's pixels: shape B."""
    return (a - b).abs().flatten(1).mean(1)


# the two networks: autoencoders, their settings beyond the shared ones (anomaly.settings.rules)
Autoencoders = Annotated[NetSpec, Net(negative_slope=FRACTION, encoder_widths=WIDTHS,
                                      decoder_widths=WIDTHS)]


class ADAE(AnomalyModule):
    """Adversarial dual autoencoders (see the module docstring). Two Adam optimisers, manual
    optimisation: `update_discriminator` then `update_generator` per batch."""

    name: ClassVar[str] = "adae"
    def __init__(self, image_shape: Sequence[int], latent_dim: LatentDim = 32,
                 generator: Autoencoders = partial(ConvAutoencoder, negative_slope=0.0),
                 discriminator: Autoencoders = partial(ConvAutoencoder, negative_slope=0.0),
                 # paper: the paper's losses; code: the published code's
                 variant: Literal["code", "paper"] = "code",
                 lr: LearningRate = 1e-5, betas: Betas = (0.5, 0.999),
                 value_range: ValueRange = "symmetric", **base) -> None:
        super().__init__(image_shape, value_range=value_range, **base)
        shape, n = self.image_shape, int(latent_dim)
        self.generator = build_net(generator, "generator", self.name, image_shape=shape, latent_dim=n,
                                   output=self.output_activation)
        self.discriminator = build_net(discriminator, "discriminator", self.name, image_shape=shape,
                                       latent_dim=n, output=self.output_activation)
        for slot, net in (("generator", self.generator), ("discriminator", self.discriminator)):
            expect_output(net, slot, self.name, shape, shape, "an image: both are autoencoders")
        dcgan_init(self)
        self.automatic_optimization = False
        self.variant = variant
        self.fake_weight, self.absolute_discriminator_loss = VARIANTS[variant]
        self.lr, self.betas = float(lr), tuple(float(b) for b in betas)

    # ---- losses (plain functions of the network outputs: tested against hand-computed values) ----
    def discriminator_loss(self, x: torch.Tensor, x_by_d: torch.Tensor, fake: torch.Tensor,
                           fake_by_d: torch.Tensor) -> torch.Tensor:
        """L_D from x, D(x), G(x) and D(G(x))."""
        loss = l1_per_sample(x, x_by_d).mean() - self.fake_weight * l1_per_sample(fake, fake_by_d).mean()
        return loss.abs() if self.absolute_discriminator_loss else loss

    def generator_loss(self, x: torch.Tensor, fake: torch.Tensor, fake_by_d: torch.Tensor) -> torch.Tensor:
        """L_G from x, G(x) and D(G(x))."""
        return l1_per_sample(x, fake).mean() + self.fake_weight * l1_per_sample(fake, fake_by_d).mean()

    # ---- training: one D update, then one G update ------------------------------------------------
    def configure_optimizers(self):
        return [torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)]

    def update_discriminator(self, x: torch.Tensor, optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """D reconstructs x and fails on G(x). Returns L_D and G(x) (with its graph, for the G
        update; detached here so the D update leaves G untouched)."""
        fake = self.generator(x)
        detached = fake.detach()
        loss = self.discriminator_loss(x, self.discriminator(x), detached, self.discriminator(detached))
        self.manual_step(optimizer, loss)
        return loss, fake

    def update_generator(self, x: torch.Tensor, optimizer,
                         fake: torch.Tensor | None = None) -> torch.Tensor:
        """G reconstructs x so that D reconstructs G(x) well; D is frozen (no gradient in its
        parameters). `fake`: G(x) from this batch's D update (computed here when None)."""
        if fake is None:
            fake = self.generator(x)
        with frozen(self.discriminator):
            loss = self.generator_loss(x, fake, self.discriminator(fake))
        self.manual_step(optimizer, loss)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x = batch["image"]
        opt_discriminator, opt_generator = self.optimizers()
        loss_discriminator, fake = self.update_discriminator(x, opt_discriminator)
        loss_generator = self.update_generator(x, opt_generator, fake)
        self.log_dict({"train/discriminator": loss_discriminator, "train/generator": loss_generator},
                      on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/loss", loss_generator, batch_size=len(x))

    # ---- scoring -------------------------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.generator(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.reconstruct(x)).flatten(1).norm(dim=1)

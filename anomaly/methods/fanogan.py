"""f-AnoGAN: Fast unsupervised anomaly detection with generative adversarial networks
(Schlegl, Seeböck, Waldstein, Langs & Schmidt-Erfurth, Medical Image Analysis 54, 2019).

Two stages. (1) A Wasserstein GAN with gradient penalty learns the normal images. (2) With G and
the critic D frozen, an encoder E learns to map images onto the GAN's latent space (the "izi_f"
training: image → z → image, with a feature residual):

    L(x) = MSE(x, G(E(x))) + κ · MSE(f(x), f(G(E(x))))

(means over the image's pixels and over f = the critic's last convolutional features). The score
is L(x) of a test image: one forward pass, where AnoGAN needs an iterative latent search.

Faithful to the paper: WGAN-GP with 5 critic steps per generator step, gradient penalty weight
10, Adam 1e-4 β (0, 0.9); z ~ N(0, 1)^128; encoder with the critic's topology and a 128-d tanh
output; encoder RMSprop 5e-5 (`encoder_optimizer`), κ = 1; inputs in [−1, 1].

Choices and differences:
- Both stages in one run: epochs [0, gan_epochs) train the GAN, the next `encoder_epochs` the
  encoder, so the run is gan_epochs + encoder_epochs epochs long. One run keeps one checkpoint,
  one results file and one threshold; a run stopped in either stage resumes from `ckpt_path` in
  that stage (the stage is a function of the epoch). The paper ran the two trainings as
  separate programs.
- The stage lengths are the settings; `trainer.max_epochs` must agree with their sum. A run
  config that leaves trainer.max_epochs at the trainer's default gets their sum (so results.json
  records the schedule that ran); one that sets it to anything else (`method=fanogan
  trainer.max_epochs=10`) is refused before any data loads, in one line that names
  method.gan_epochs and method.encoder_epochs (`FAnoGAN.check_config`, which
  anomaly.config_schema calls). Refused rather than split:
  a single number cannot say how long each stage should be (the GAN needs most of the epochs,
  the encoder only has to invert a fixed generator), splitting it by the defaults' 2:1 would
  silently discard the stage lengths a run or a paper config set, and replacing the user's
  number (as this method did before) trained 150 epochs where 10 were asked for. Used outside
  the pipeline (a Trainer of your own), the method still sets the trainer's max_epochs to the
  sum at the start of fit, with a warning.
- Networks: the DCGAN generator / discriminator of `anomaly.nets.dcgan` (as AnoGAN's, sized from
  the image), not the paper's 64×64 residual networks. The critic (and the encoder) use layer
  normalisation instead of batch norm (`method.critic.norm`: layer or none; the encoder's `norm` follows it): the gradient penalty is
  a per-image gradient, which batch statistics would couple across the batch.
- Generator steps are counted over the whole run: one after every 5th critic step, whatever the
  epoch length (a 3-batch epoch still trains G).
- During the encoder stage G and D run in inference mode (BN running statistics, no updates):
  the stage leaves them bit-identical, buffers included.
- The per-epoch validation during the GAN stage scores with the untrained encoder (cheap, and
  meaningless until the encoder stage): read val/auroc from the encoder stage on.
- Epoch counts are not taken from the paper (it counts iterations on its OCT data); the
  defaults and experiment=fanogan_mnist are this framework's budget.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated, ClassVar, Literal, Sequence

import torch
from omegaconf import DictConfig

from anomaly import AnomalyError
from anomaly.config_schema import check_stage_epochs
from anomaly.methods.base import AnomalyModule, ValueRange
from anomaly.nets import (DCGANDiscriminator, DCGANEncoder, DCGANGenerator, dcgan_init, frozen,
                          frozen_inference)
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.settings.rules import AtLeastOne, Betas, Choice, LatentDim, LearningRate, Net, NonNegative

log = logging.getLogger(__name__)

# the critic's and the encoder's normalisation: no batch norm (the gradient penalty is per image)
Normed = Annotated[NetSpec, Net(norm=Choice(options=("layer", "none")))]


def mse_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(1)


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(‖∇D(x̂)‖₂ − 1)²] at random points x̂ on the lines between real and fake images."""
    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class FAnoGAN(AnomalyModule):
    """WGAN-GP, then the izi_f encoder (see the module docstring). Three optimisers (critic,
    generator, encoder), manual optimisation."""

    name: ClassVar[str] = "fanogan"
    # the two stages (a compute budget shortens both: anomaly.cost)
    stage_settings: ClassVar[dict[str, str]] = {"gan": "method.gan_epochs", "encoder": "method.encoder_epochs"}
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """The run trains method.gan_epochs + method.encoder_epochs epochs (called by
        anomaly.config_schema.check_train once every plain setting passed). A trainer.max_epochs
        that was set (on the command line, or by any config but the trainer group's own default)
        and says otherwise is refused; one left at the trainer's default becomes their sum, so the
        run's config records the schedule it ran."""
        check_stage_epochs(cfg, "fanogan", "gan_epochs", "encoder_epochs", first_min=1)

    def __init__(self, image_shape: Sequence[int], latent_dim: LatentDim = 128,
                 prior: Literal["normal", "uniform"] = "normal", generator: NetSpec = DCGANGenerator,
                 critic: Normed = partial(DCGANDiscriminator, norm="layer"),
                 encoder: Normed = partial(DCGANEncoder, norm="layer"), gan_epochs: AtLeastOne = 100,
                 encoder_epochs: AtLeastOne = 50, critic_steps: AtLeastOne = 5,
                 gradient_penalty_weight: NonNegative = 10.0, lr: LearningRate = 1e-4, betas: Betas = (0.0, 0.9),
                 encoder_optimizer: Literal["rmsprop", "adam"] = "rmsprop", encoder_lr: LearningRate = 5e-5,
                 feature_weight: NonNegative = 1.0, value_range: ValueRange = "symmetric", **base) -> None:
        super().__init__(image_shape, value_range=value_range, **base)
        if self.value_range != "symmetric":
            raise AnomalyError(f"method.value_range={self.value_range!r}: method=fanogan needs symmetric "
                               "(inputs in [−1, 1] like its tanh generator)")
        self.latent_dim = int(latent_dim)
        self.prior = prior
        shape, n = self.image_shape, self.latent_dim
        self.generator = build_net(generator, "generator", self.name, in_features=n, image_shape=shape)
        self.critic = build_net(critic, "critic", self.name, image_shape=shape)
        self.encoder = build_net(encoder, "encoder", self.name, image_shape=shape, out_features=n)
        for slot, net, given, wanted, what in (("generator", self.generator, (n,), shape, "an image"),
                                               ("critic", self.critic, shape, (), "one value per image"),
                                               ("encoder", self.encoder, shape, (n,), "the latent: method.latent_dim")):
            expect_output(net, slot, self.name, given, wanted, what)
        if not callable(getattr(self.critic, "features", None)):
            raise AnomalyError(f"method=fanogan: method.critic={type(self.critic).__name__} has no features(x) "
                               "(the feature map the izi_f loss and the score compare)")
        dcgan_init(self)
        self.automatic_optimization = False
        self.gan_epochs, self.encoder_epochs = int(gan_epochs), int(encoder_epochs)
        self.critic_steps = int(critic_steps)
        self.gradient_penalty_weight = float(gradient_penalty_weight)
        self.lr, self.betas = float(lr), tuple(float(b) for b in betas)
        self.encoder_optimizer, self.encoder_lr = encoder_optimizer, float(encoder_lr)
        self.feature_weight = float(feature_weight)

    def sample_prior(self, n: int, like: torch.Tensor) -> torch.Tensor:
        if self.prior == "normal":
            return torch.randn(n, self.latent_dim, device=like.device, dtype=like.dtype)
        return torch.rand(n, self.latent_dim, device=like.device, dtype=like.dtype) * 2.0 - 1.0

    # ---- the schedule ------------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        """"gan" for the first gan_epochs epochs, then "encoder"."""
        return "gan" if self.current_epoch < self.gan_epochs else "encoder"

    training_stage = stage

    @property
    def flop_cycle(self) -> int:
        # the GAN stage updates the generator every critic_steps batches; the encoder's cost is even
        return self.critic_steps if self.stage == "gan" else 1

    def on_fit_start(self) -> None:
        self.follow_stage_epochs(gan_epochs=self.gan_epochs, encoder_epochs=self.encoder_epochs)

    # ---- training ----------------------------------------------------------------------------------
    def configure_optimizers(self):
        encoder_cls = torch.optim.RMSprop if self.encoder_optimizer == "rmsprop" else torch.optim.Adam
        return [torch.optim.Adam(self.critic.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas),
                encoder_cls(self.encoder.parameters(), lr=self.encoder_lr)]

    def update_critic(self, x: torch.Tensor, optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic: D(G(z)) − D(x) + weight · gradient penalty. Returns (Wasserstein estimate
        D(x) − D(G(z)), penalty)."""
        with torch.no_grad():  # G gets no gradient from the critic's update
            fake = self.generator(self.sample_prior(len(x), x))
        distance = self.critic(x).mean() - self.critic(fake).mean()
        penalty = gradient_penalty(self.critic, x, fake)
        self.manual_step(optimizer, -distance + self.gradient_penalty_weight * penalty)
        return distance.detach(), penalty.detach()

    def update_generator(self, n: int, like: torch.Tensor, optimizer) -> torch.Tensor:
        """Generator: −D(G(z)); the critic's parameters get no gradient."""
        with frozen(self.critic):
            loss = -self.critic(self.generator(self.sample_prior(n, like))).mean()
        self.manual_step(optimizer, loss)
        return loss

    def izif_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per image MSE(x, G(E(x))) + κ · MSE(f(x), f(G(E(x)))): shape B (also the score)."""
        fake = self.generator(self.encoder(x))
        return mse_per_sample(x, fake) + self.feature_weight * mse_per_sample(
            self.critic.features(x), self.critic.features(fake))

    def update_encoder(self, x: torch.Tensor, optimizer) -> torch.Tensor:
        """Encoder: izi_f loss, G and D frozen and in inference mode."""
        with frozen_inference(self.generator, self.critic):
            loss = self.izif_loss(x).mean()
        self.manual_step(optimizer, loss)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x = batch["image"]
        opt_critic, opt_generator, opt_encoder = self.optimizers()
        if self.stage == "encoder":
            loss = self.update_encoder(x, opt_encoder)
            self.log("train/encoder", loss, on_step=True, on_epoch=True, batch_size=len(x))
            self.log("train/loss", loss, batch_size=len(x))
            return
        distance, penalty = self.update_critic(x, opt_critic)
        self.log_dict({"train/wasserstein": distance, "train/gradient_penalty": penalty},
                      on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/loss", -distance, batch_size=len(x))
        # batches over the whole run, so short epochs still reach the generator step
        if (self.trainer.fit_loop.total_batch_idx + 1) % self.critic_steps == 0:
            loss_generator = self.update_generator(len(x), x, opt_generator)
            self.log("train/generator", loss_generator, on_step=True, on_epoch=True, batch_size=len(x))

    # ---- scoring -------------------------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoder(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.izif_loss(x)

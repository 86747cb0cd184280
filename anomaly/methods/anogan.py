"""AnoGAN: Unsupervised Anomaly Detection with Generative Adversarial Networks to Guide Marker
Discovery (Schlegl, Seeböck, Waldstein, Schmidt-Erfurth & Langs, IPMI 2017, arXiv 1703.05921).

A DCGAN learns the normal images. A test image x is scored by searching the latent space for the
z whose G(z) is closest to it, with G and D frozen:

    L(z) = (1 − λ) Σ|x − G(z)| + λ Σ|f(x) − f(G(z))|

(sums over the image's pixels and over the discriminator's last convolutional features f), Γ Adam
steps on z from a random start. The score is L at the final z: a normal image has a near
pre-image on the learnt manifold, an anomaly does not.

Faithful to the paper and the published code (LeeDoYup/AnoGAN-tf): DCGAN generator
z ~ U(−1, 1)^100 → linear 4×4×512 + BN + ReLU → 5×5 stride-2 deconvolutions + BN + ReLU → tanh
image; discriminator 5×5 stride-2 convolutions + LReLU(0.2), BN from the second; BCE GAN losses,
Adam 2e-4 β1 0.5, batch 64 (experiment config), one D step then two G steps per batch; inputs in
[−1, 1]; λ = 0.1, Γ = 500 (the paper; the code used 100), search Adam lr 1e-3; score = final loss.

Deliberate differences and bug fixes:
- Latent initialisation (fix): the published code kept one z variable for the whole test set, so
  each image's search started where the previous image's ended, making a score depend on the
  image before it. Here every image starts from its own fresh draw from the prior, U(−1, 1).
  The draws come from a generator re-seeded (`search_seed`) at the start of every validation
  and test epoch, so a checkpoint re-scores to the same numbers.
- Batched search: a whole batch of images is searched at once instead of one image at a time.
  The loss is the sum of the images' losses, so each z_i's gradient is its own image's; Adam
  acts element-wise, so each z_i follows exactly its per-image trajectory. Batch norm runs in
  inference mode (running statistics) during the search so that images do not interact through
  batch statistics, as the published search also used D and G in inference mode.
  `latent_search_per_image` is the one-image-at-a-time loop (tests compare the two).
- Image size: the networks are sized from the input (16, 32 or 64 pixels square, see
  `anomaly.nets.dcgan`); 64×64 is the paper's network exactly, 32×32 (the framework's MNIST)
  drops the first stage on the image side.
- The two G steps of a batch reuse that batch's z (as the DCGAN code AnoGAN builds on does).
- Validation while training: the search is as costly as scoring, so the per-epoch validation
  inside fit is skipped by default (`fit_validation=false`); the threshold is fitted, as for
  every method, by the validation after training, with the full search.
"""

from __future__ import annotations

from typing import Annotated, Callable, ClassVar, Iterable, Sequence

import torch
from lightning.pytorch.trainer.states import TrainerFn

from anomaly import AnomalyError
from anomaly.methods.base import AnomalyModule, ValueRange, real_fake_bce
from anomaly.nets import DCGANDiscriminator, DCGANGenerator, dcgan_init, frozen, frozen_inference
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.settings.rules import AtLeastOne, Betas, Count, Float, LatentDim, LearningRate, Positive

Progress = Callable[[Iterable[int]], Iterable[int]]
SearchResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (score, z, G(z)), each per image


# ---- the latent search: plain functions of G, D and a batch --------------------------------------
def anogan_loss(x: torch.Tensor, fake: torch.Tensor, features_x: torch.Tensor,
                features_fake: torch.Tensor, feature_weight: float) -> torch.Tensor:
    """Per-image (1 − λ) Σ|x − G(z)| + λ Σ|f(x) − f(G(z))|: shape B."""
    residual = (x - fake).abs().flatten(1).sum(1)
    discrimination = (features_x - features_fake).abs().flatten(1).sum(1)
    return (1.0 - feature_weight) * residual + feature_weight * discrimination


def latent_search(generator: DCGANGenerator, discriminator: DCGANDiscriminator, x: torch.Tensor,
                  z0: torch.Tensor, steps: int = 500, lr: float = 1e-3,
                  betas: Sequence[float] = (0.9, 0.999), feature_weight: float = 0.1,
                  progress: Progress | None = None) -> SearchResult:
    """Search z for every image of the batch at once, starting from z0 (B×latent), G and D frozen
    and in inference mode. Returns (score, z, G(z)) at the final z; score = the loss there."""
    steps = int(steps)
    # Scoring loops run under no_grad (and possibly inference mode): the search needs gradients.
    with frozen_inference(generator, discriminator), torch.inference_mode(False), torch.enable_grad():
        x = x.clone() if x.is_inference() else x
        target = discriminator.features(x).detach()
        z = z0.detach().clone().to(x).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr, betas=tuple(betas))
        for _ in (progress or iter)(range(steps)):
            optimizer.zero_grad(set_to_none=True)
            fake = generator(z)
            loss = anogan_loss(x, fake, target, discriminator.features(fake), feature_weight)
            # a sum: each z_i gets exactly its own image's gradient
            loss.sum().backward()
            optimizer.step()
        with torch.no_grad():
            fake = generator(z)
            score = anogan_loss(x, fake, target, discriminator.features(fake), feature_weight)
    return score, z.detach(), fake


def latent_search_per_image(generator: DCGANGenerator, discriminator: DCGANDiscriminator,
                            x: torch.Tensor, z0: torch.Tensor, **search) -> SearchResult:
    """The same search one image at a time (the published way, minus its carried-over z)."""
    outs = [latent_search(generator, discriminator, x[i:i + 1], z0[i:i + 1], **search) for i in range(len(x))]
    return tuple(torch.cat(parts) for parts in zip(*outs))  # type: ignore[return-value]


# ---- the method ------------------------------------------------------------------------------------
class AnoGAN(AnomalyModule):
    """DCGAN + test-time latent search (see the module docstring). Two Adam optimisers, manual
    optimisation: `update_discriminator`, then `update_generator` `generator_steps` times."""

    name: ClassVar[str] = "anogan"
    def __init__(self, image_shape: Sequence[int], latent_dim: LatentDim = 100,
                 generator: NetSpec = DCGANGenerator, discriminator: NetSpec = DCGANDiscriminator,
                 lr: LearningRate = 2e-4, betas: Betas = (0.5, 0.999), generator_steps: AtLeastOne = 2,
                 search_steps: Count = 500, search_lr: Positive = 1e-3,
                 search_betas: Betas = (0.9, 0.999),
                 # λ weighs the search's two terms (residual, discrimination)
                 feature_weight: Annotated[float, Float(low=0, high=1)] = 0.1,
                 search_seed: Count = 0, fit_validation: bool = False,
                 value_range: ValueRange = "symmetric", **base) -> None:
        super().__init__(image_shape, value_range=value_range, **base)
        if self.value_range != "symmetric":
            raise AnomalyError(f"method.value_range={self.value_range!r}: method=anogan needs symmetric "
                               "(inputs in [−1, 1] like its tanh generator)")
        self.latent_dim = int(latent_dim)
        shape, n = self.image_shape, self.latent_dim
        self.generator = build_net(generator, "generator", self.name, in_features=n, image_shape=shape)
        self.discriminator = build_net(discriminator, "discriminator", self.name, image_shape=shape)
        expect_output(self.generator, "generator", self.name, (n,), shape, "an image")
        expect_output(self.discriminator, "discriminator", self.name, shape, (), "one logit per image")
        if not callable(getattr(self.discriminator, "features", None)):
            raise AnomalyError(f"method=anogan: method.discriminator={type(self.discriminator).__name__} has no "
                               "features(x) (the feature map the residual loss compares)")
        dcgan_init(self)
        self.automatic_optimization = False
        self.lr, self.betas = float(lr), tuple(float(b) for b in betas)
        self.generator_steps = int(generator_steps)
        self.search_options = {"steps": int(search_steps), "lr": float(search_lr),
                       "betas": tuple(float(b) for b in search_betas), "feature_weight": float(feature_weight)}
        self.search_seed = int(search_seed)
        self.fit_validation = bool(fit_validation)
        self._search_rng: torch.Generator | None = None

    def sample_prior(self, n: int, generator: torch.Generator | None = None,
                     like: torch.Tensor | None = None) -> torch.Tensor:
        """n draws from U(−1, 1)^latent_dim: on the device of `like` (and in its dtype) from torch's
        global generator (training: no host-to-device copy per step), or on the generator's own
        device (the search's seeded CPU generator: the same starting points on every device)."""
        if generator is not None or like is None:
            return torch.rand(n, self.latent_dim, generator=generator) * 2.0 - 1.0
        # drawn in float32 and cast, as the CPU draw always was: the same numbers as before on a CPU
        return (torch.rand(n, self.latent_dim, device=like.device) * 2.0 - 1.0).to(like.dtype)

    # ---- training: one D update, then `generator_steps` G updates ----------------------------------
    def configure_optimizers(self):
        return [torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)]

    def update_discriminator(self, x: torch.Tensor, optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """D: real x vs G(z), z ~ U(−1, 1). Returns the loss and z (for the G updates)."""
        z = self.sample_prior(len(x), like=x)
        with torch.no_grad():  # G gets no gradient from D's update
            fake = self.generator(z)
        loss = real_fake_bce(self.discriminator(x), True) + real_fake_bce(self.discriminator(fake), False)
        self.manual_step(optimizer, loss)
        return loss, z

    def update_generator(self, z: torch.Tensor, optimizer) -> torch.Tensor:
        """G fools D (non-saturating loss); D's parameters get no gradient."""
        with frozen(self.discriminator):
            loss = real_fake_bce(self.discriminator(self.generator(z)), True)
        self.manual_step(optimizer, loss)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x = batch["image"]
        opt_discriminator, opt_generator = self.optimizers()
        loss_discriminator, z = self.update_discriminator(x, opt_discriminator)
        for _ in range(self.generator_steps):
            loss_generator = self.update_generator(z, opt_generator)
        self.log_dict({"train/discriminator": loss_discriminator, "train/generator": loss_generator},
                      on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/loss", loss_generator, batch_size=len(x))

    # ---- validation while fitting: skipped unless asked for (see the module docstring) ---------------
    def _skip_validation(self) -> bool:
        return (not self.fit_validation and self._trainer is not None
                and self.trainer.state.fn == TrainerFn.FITTING)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._search_rng = torch.Generator().manual_seed(self.search_seed)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if not self._skip_validation():
            super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self._skip_validation():
            super().on_validation_epoch_end()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._search_rng = torch.Generator().manual_seed(self.search_seed)

    # ---- scoring ------------------------------------------------------------------------------------
    def _progress(self) -> Progress | None:
        trainer = self._trainer
        if trainer is None or trainer.progress_bar_callback is None or not trainer.is_global_zero:
            return None
        from tqdm.auto import tqdm

        return lambda steps: tqdm(steps, desc="latent search", leave=False, dynamic_ncols=True)

    def search_latents(self, x: torch.Tensor) -> SearchResult:
        """(score, z, G(z)) for a batch, each image from its own fresh z."""
        if self._search_rng is None:
            self._search_rng = torch.Generator().manual_seed(self.search_seed)
        z0 = self.sample_prior(len(x), self._search_rng)
        return latent_search(self.generator, self.discriminator, x, z0, progress=self._progress(),
                             **self.search_options)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.search_latents(x)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.search_latents(x)[2]

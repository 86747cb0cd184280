"""Deep SVDD: Deep One-Class Classification (Ruff, Vandermeulen, Görnitz, Deecke, Siddiqui,
Binder, Müller & Kloft, ICML 2018; code: lukasruff/Deep-SVDD-PyTorch).

A network φ without bias terms maps the normal images close to a centre c. One-class objective:
mean ‖φ(x) − c‖² (+ weight decay, Adam's); soft-boundary (`objective=soft-boundary`):
R² + 1/ν · mean max(0, ‖φ(x) − c‖² − R²). Score: ‖φ(x) − c‖², minus R² for soft-boundary.

Two stages in one run, as the published code runs them one after the other:
- epochs [0, pretrain_epochs): a convolutional autoencoder (the encoder φ and its mirrored decoder,
  `anomaly.nets.lenet`) learns to reconstruct the training images: per image the sum of squared
  errors, mean over the batch; Adam (ae_lr, ae_weight_decay), lr ÷ 10 at each of ae_lr_milestones
  (stage epochs). The encoder's weights and BatchNorm statistics carry over: it is one module.
  pretrain_epochs=0: no pretraining, c comes from the randomly initialised network.
- the next svdd_epochs: at the stage's start, c = the mean of φ over the training images (φ in
  eval mode, no gradients), entries with |c_i| < center_eps set to ±center_eps; then Deep SVDD on
  the encoder alone with a fresh Adam (lr, weight_decay), lr ÷ 10 at each of lr_milestones. For
  soft-boundary, after warm_up_epochs of the stage R is set after every batch to the (1 − ν)
  quantile of that batch's distances ‖φ(x) − c‖ (linear interpolation, as numpy's), computed
  before the update, as the code does; R starts at 0.
c, R and the preprocessing statistics are buffers: they travel with checkpoints, and a resumed
run keeps them (c is computed once, when the SVDD stage starts without one). The stage is a
function of the epoch, so a run stopped in either stage resumes in it from `ckpt_path`.

The stage lengths are the settings; trainer.max_epochs follows their sum when left at the
trainer's default, and one set to anything else is refused in one line before any data loads
(`DeepSVDD.check_config`; see anomaly/methods/fanogan.py for why refused rather than split).
While pretraining (and wherever no c exists yet: a run stopped by max_steps in that stage) the
score is the autoencoder's reconstruction error, as the code's autoencoder test scores it: the
per-epoch val/auroc of that stage is the autoencoder's.

Preprocessing (`preprocessing=gcn_minmax`, the code's): global contrast normalisation per image
(subtract the mean over its pixels, divide by the mean absolute deviation: l1), then min-max
scaling (x − min)/(max − min) with the smallest and largest GCN'd value over the training images.
Applied on the device to every batch (GCN does not depend on the value range). `none`: the images
in [0, 1] as they come.

Deliberate differences from the published code:
- The min-max constants are computed from this run's training split (a pass over it when fit
  starts), not the code's hard-coded per-class constants for the full MNIST / CIFAR-10 training
  classes: the same rule, statistics from the run's own training images (any dataset, any
  protocol, no test information).
- Fixed: the code pushes entries of c with 0 < |c_i| < eps to ±eps but leaves an entry exactly 0
  at 0 (its two masks test c < 0 and c > 0); here such an entry becomes +eps, so no |c_i| < eps.
- Fixed, under current PyTorch: the code steps its MultiStepLR at the start of each epoch, before
  any optimiser step. Under its pinned torch 0.4.1 that drops the lr at the milestone epoch (lr for
  epochs 0–49, lr/10 from epoch 50 with milestone 50); under torch ≥ 1.1 the same loop drops it
  one epoch early (from epoch 49). Here the drop is at the milestone, as under the code's torch.
- A constant image (GCN divides 0 by 0: NaN in the code) becomes all zeros before min-max.
- The radius is a quantile on the device (torch.quantile, linear like numpy's), not a numpy call
  per batch: no host reads in a training step.
- Both stages share data.batch_size (the code has ae_batch_size; its examples use 200 for both).
- Not carried: the code's amsgrad option (Adam only) and the ELU variant of the CIFAR-10 net.
Kept as the code has them: the warm-up before R moves (10 epochs), R from the pre-update batch
distances, c from the eval-mode network (BatchNorm running statistics), the decoder's sigmoid,
Adam's L2 weight decay on every weight, and the CIFAR-10 net's Xavier initialisation of the
autoencoder only (with pretrain_epochs=0 the colour net keeps PyTorch's default, as the code's
Deep SVDD network does).
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import Annotated, Any, ClassVar, Iterable, Iterator, Literal, Sequence

import torch
from omegaconf import DictConfig

from anomaly import AnomalyError
from anomaly.config_schema import ConfigError, check_stage_epochs, setting
from anomaly.methods.base import AnomalyModule, ValueRange
from anomaly.nets.build import NetSpec, build_net, expect_output, output_shape
from anomaly.nets.lenet import LeNetDecoder, LeNetEncoder, lenet_preset, lenet_xavier_init
from anomaly.settings.rules import (AtLeastOne, Count, Int, LearningRate, Milestones, Net, NonNegative, Nu,
                                    is_int)

log = logging.getLogger(__name__)



def warm_up_problem(objective: Any, warm_up: Any, svdd_epochs: Any) -> str | None:
    """Why a soft-boundary radius would never be set (None: it will be, or it does not apply)."""
    if objective == "soft-boundary" and is_int(warm_up) and is_int(svdd_epochs) and warm_up >= svdd_epochs:
        return (f"method.warm_up_epochs={warm_up} with method.svdd_epochs={svdd_epochs}: the soft-boundary "
                "radius R is set only after the warm-up, so it would stay 0; give fewer warm-up epochs "
                "(the code's 10) or more SVDD epochs")
    return None


def global_contrast_normalisation(x: torch.Tensor) -> torch.Tensor:
    """Per image: minus its mean over every pixel and channel, divided by its mean absolute
    deviation (the code's GCN with l1 scale); a constant image becomes zeros."""
    centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
    scale = centred.abs().mean(dim=(1, 2, 3), keepdim=True)
    return centred / scale.clamp_min(torch.finfo(x.dtype).tiny)


class DeepSVDD(AnomalyModule):
    """Autoencoder pretraining, then Deep SVDD on its encoder (see the module docstring). Two
    optimisers (autoencoder, encoder), manual optimisation, one MultiStepLR each."""

    name: ClassVar[str] = "deep_svdd"
    # the two stages and their lr milestones (a compute budget shortens both: anomaly.cost)
    stage_settings: ClassVar[dict[str, str]] = {"pretrain": "method.pretrain_epochs", "svdd": "method.svdd_epochs"}
    milestone_settings: ClassVar[dict[str, str]] = {"ae_lr_milestones": "pretrain", "lr_milestones": "svdd"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """trainer.max_epochs = method.pretrain_epochs + method.svdd_epochs, and a soft-boundary
        warm-up that ends within the SVDD stage (called by anomaly.config_schema.check_train)."""
        problem = warm_up_problem(setting(cfg, "method.objective"), setting(cfg, "method.warm_up_epochs"),
                                  setting(cfg, "method.svdd_epochs"))
        if problem is not None:
            raise ConfigError(problem)
        check_stage_epochs(cfg, "deep_svdd", "pretrain_epochs", "svdd_epochs", first_min=0)

    def __init__(self, image_shape: Sequence[int], objective: Literal["one-class", "soft-boundary"] = "one-class",
                 nu: Nu = 0.1, warm_up_epochs: Count = 10, center_eps: NonNegative = 0.1,
                 preprocessing: Literal["gcn_minmax", "none"] = "gcn_minmax",
                 encoder: Annotated[NetSpec, Net(rep_dim=Int(low=1, null="the published net's: 32 for 1 channel, "
                                                                      "128 for more"))] = LeNetEncoder,
                 decoder: NetSpec = LeNetDecoder, pretrain_epochs: Count = 150, svdd_epochs: AtLeastOne = 150,
                 lr: LearningRate = 1e-4, weight_decay: NonNegative = 0.5e-6, lr_milestones: Milestones = (50,),
                 ae_lr: LearningRate = 1e-4, ae_weight_decay: NonNegative = 0.5e-3,
                 ae_lr_milestones: Milestones = (50,), value_range: ValueRange = "unit", **base) -> None:
        super().__init__(image_shape, value_range=value_range, **base)
        if self.value_range != "unit":
            raise AnomalyError(f"method.value_range={self.value_range!r}: method=deep_svdd needs unit "
                               "(its autoencoder ends in a sigmoid, as the published code's)")
        self.objective, self.nu, self.warm_up_epochs = objective, float(nu), int(warm_up_epochs)
        self.center_eps, self.preprocessing = float(center_eps), preprocessing
        self.pretrain_epochs, self.svdd_epochs = int(pretrain_epochs), int(svdd_epochs)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.lr_milestones = [int(m) for m in lr_milestones]
        self.ae_lr, self.ae_weight_decay = float(ae_lr), float(ae_weight_decay)
        self.ae_lr_milestones = [int(m) for m in ae_lr_milestones]
        shape = self.image_shape
        self.encoder = build_net(encoder, "encoder", self.name, image_shape=shape)
        out = output_shape(self.encoder, shape)
        if len(out) != 1:
            raise AnomalyError(f"method={self.name}: method.encoder={type(self.encoder).__name__} gives "
                               f"{'×'.join(map(str, out))} per image; it needs a vector (the representation φ(x))")
        rep = out[0]
        self.decoder = build_net(decoder, "decoder", self.name, image_shape=shape, in_features=rep)
        expect_output(self.decoder, "decoder", self.name, (rep,), shape, "an image: the autoencoder pretraining")
        if lenet_preset(self.image_shape[0]).xavier and self.pretrain_epochs > 0:
            lenet_xavier_init(self.encoder, self.decoder)
        self.automatic_optimization = False
        # fitted in this run (or restored with a checkpoint); NaN / False until then
        self.register_buffer("center", torch.full((rep,), float("nan")))
        self.register_buffer("center_ready", torch.tensor(False))
        self.register_buffer("radius", torch.tensor(0.0))
        self.register_buffer("gcn_min", torch.tensor(float("nan")))
        self.register_buffer("gcn_max", torch.tensor(float("nan")))

    # ---- the schedule --------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        """"pretrain" for the first pretrain_epochs epochs, then "svdd"."""
        return "pretrain" if self.current_epoch < self.pretrain_epochs else "svdd"

    training_stage = stage

    def configure_optimizers(self):
        autoencoder = torch.optim.Adam(chain(self.encoder.parameters(), self.decoder.parameters()),
                                       lr=self.ae_lr, weight_decay=self.ae_weight_decay)
        svdd = torch.optim.Adam(self.encoder.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedulers = [torch.optim.lr_scheduler.MultiStepLR(autoencoder, self.ae_lr_milestones, 0.1),
                      torch.optim.lr_scheduler.MultiStepLR(svdd, self.lr_milestones, 0.1)]
        return [autoencoder, svdd], schedulers

    def on_fit_start(self) -> None:
        self.follow_stage_epochs(pretrain_epochs=self.pretrain_epochs, svdd_epochs=self.svdd_epochs)

    def on_train_start(self) -> None:
        if self.preprocessing == "gcn_minmax" and not bool(torch.isfinite(self.gcn_min)):
            self.fit_preprocessing(*self._training_images())

    def on_train_epoch_start(self) -> None:
        if self.stage == "svdd" and not bool(self.center_ready):
            self.fit_center(*self._training_images())

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        schedulers[0 if self.stage == "pretrain" else 1].step()

    def on_train_end(self) -> None:
        if not bool(self.center_ready):
            log.warning("Deep SVDD stopped in its pretraining stage (epoch %d of %d pretraining epochs): no "
                        "centre c was computed, so the scores are the autoencoder's reconstruction errors",
                        self.current_epoch, self.pretrain_epochs)

    def _training_images(self) -> tuple[Iterator[dict[str, torch.Tensor]], bool]:
        """(the training images' batches on this device, whether they are this rank's share only).
        The datamodule's ordered pass over the whole training split where there is one (every rank
        sees every image: one c everywhere), else the trainer's training loader."""
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "train_eval_dataloader"):
            return self.device_batches(datamodule.train_eval_dataloader()), False
        return self.device_batches(self.trainer.train_dataloader), self.trainer.world_size > 1

    # ---- fitted at the start of the stages -----------------------------------------------------
    @torch.no_grad()
    def fit_preprocessing(self, batches: Iterable[dict[str, torch.Tensor]], sharded: bool = False) -> None:
        """gcn_min / gcn_max: the extreme GCN'd values over the training images."""
        low = high = None
        for batch in batches:
            g = global_contrast_normalisation(batch["image"])
            low = g.amin() if low is None else torch.minimum(low, g.amin())
            high = g.amax() if high is None else torch.maximum(high, g.amax())
        if low is None:
            raise AnomalyError("method=deep_svdd: no training images to fit the min-max scaling on")
        if sharded:
            low, high = self.all_gather(low).amin(), self.all_gather(high).amax()
        if not bool(high > low):
            raise AnomalyError("method=deep_svdd: every training image is constant after global contrast "
                               "normalisation, so min-max scaling is undefined: use method.preprocessing=none")
        self.gcn_min.copy_(low)
        self.gcn_max.copy_(high)

    @torch.no_grad()
    def fit_center(self, batches: Iterable[dict[str, torch.Tensor]], sharded: bool = False) -> None:
        """c = mean φ(x) over the training images (eval mode), |c_i| < eps pushed to ±eps."""
        was_training = self.encoder.training
        self.encoder.eval()
        total = torch.zeros_like(self.center)
        count = torch.zeros((), device=self.center.device)
        for batch in batches:
            features = self.encoder(self.preprocess(batch["image"]))
            total += features.sum(0)
            count += len(features)
        self.encoder.train(was_training)
        if sharded:
            total, count = self.all_gather(total).sum(0), self.all_gather(count).sum()
        self.center.copy_(push_from_zero(total / count, self.center_eps))
        self.center_ready.fill_(True)

    # ---- training --------------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocessing == "none":
            return x
        return (global_contrast_normalisation(x) - self.gcn_min) / (self.gcn_max - self.gcn_min)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """‖φ(x) − c‖² per image of a preprocessed batch."""
        return (self.encoder(x) - self.center).pow(2).sum(1)

    def reconstruction_errors(self, x: torch.Tensor) -> torch.Tensor:
        """Σ (x̂ − x)² over each preprocessed image's pixels (the code's autoencoder loss, per image)."""
        return (self.decoder(self.encoder(x)) - x).pow(2).flatten(1).sum(1)

    def svdd_loss(self, dist: torch.Tensor) -> torch.Tensor:
        if self.objective == "soft-boundary":
            r2 = self.radius.pow(2)
            return r2 + (dist - r2).clamp_min(0).mean() / self.nu
        return dist.mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x = self.preprocess(batch["image"])
        opt_autoencoder, opt_svdd = self.optimizers()
        if self.stage == "pretrain":
            loss = self.reconstruction_errors(x).mean()
            self.manual_step(opt_autoencoder, loss)
            self.log("train/ae_loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
            self.log("train/loss", loss, batch_size=len(x))
            return
        dist = self.distances(x)
        loss = self.svdd_loss(dist)
        self.manual_step(opt_svdd, loss)
        if self.objective == "soft-boundary" and self.current_epoch - self.pretrain_epochs >= self.warm_up_epochs:
            # the (1 − ν) quantile of this batch's (pre-update) distances, on the device
            self.radius.copy_(torch.quantile(dist.detach().sqrt(), 1.0 - self.nu))
        self.log("train/svdd_loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/loss", loss, batch_size=len(x))
        if self.objective == "soft-boundary":
            self.log("train/radius", self.radius.clone(), on_step=False, on_epoch=True, batch_size=len(x))

    # ---- scoring -----------------------------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        if not bool(self.center_ready):  # pretraining: the autoencoder's score
            return self.reconstruction_errors(x)
        dist = self.distances(x)
        return dist - self.radius.pow(2) if self.objective == "soft-boundary" else dist


def push_from_zero(c: torch.Tensor, eps: float) -> torch.Tensor:
    """c with every entry of |c_i| < eps set to −eps if negative, else +eps (0 included)."""
    return torch.where(c.abs() < eps, torch.where(c < 0, -eps, eps).to(c.dtype), c)

"""GEOM: Deep Anomaly Detection Using Geometric Transformations (Golan & El-Yaniv, NeurIPS 2018,
arXiv 1805.10917; code: izikgo/AnomalyDetectionTransformations, Keras).

A wide residual network learns to tell which of 72 geometric transformations was applied to a
normal image; an image whose transformations it cannot tell apart is anomalous.

As the published code has it (transformations.py, experiments.py, utils.py,
models/wide_residual_network.py):
- The 72 transformations, in the code's order (itertools.product): horizontal flip (no, yes) ×
  translation tx ∈ (0, −8, +8) × ty ∈ (0, −8, +8) × rotation by k·90° counter-clockwise, k ∈ 0…3
  (`TRANSFORMATIONS`, label = index). Each is applied as: flip, then translate, then rotate
  (np.fliplr, keras apply_affine_transform with fill_mode="reflect", np.rot90). The Keras 2.2 /
  keras-preprocessing 1.0 translation is scipy.ndimage.affine_transform with offset (tx, ty) on
  (rows, columns): out[r, c] = in[r + tx, c + ty] (tx moves rows, whatever its name), and
  scipy's "reflect" repeats the edge pixel (…c b a | a b c…, numpy's "symmetric"; torch's
  "reflect" would not). Integer shifts with order-1 interpolation copy pixels exactly, so each
  transformation is a fixed map of pixel positions: here one gather on the device
  (`transformation_maps`), for a whole batch with a label per image.
- The classifier: WRN-10-4 (the code's choice for CIFAR-10, CIFAR-100 and Fashion-MNIST;
  WRN-16-8 and translations of 16 px only for 64×64 cats-vs-dogs), dropout 0, softmax over the
  72 transformations, categorical cross-entropy, Keras Adam (lr 1e-3, β 0.9 / 0.999, ε 1e-7),
  L2 0.5·5e-4 on every weight (= Adam's coupled weight_decay 5e-4 here), batch 128.
- Images in [−1, 1] (2·x/255 − 1); 28×28 Fashion-MNIST zero-padded by 2 px to 32×32 before
  scaling (`pad`: the padding takes the value range's minimum, as a 0 pixel scaled).
- Dirichlet normality score: for each transformation t, a Dirichlet α_t is fitted by maximum
  likelihood to the 72-way softmax outputs of T_t(x) over the normal training images: Minka's
  initial precision (K − 1)·(−ψ(1)) / (Σ f log f − Σ f·mean log p) with f the mean output,
  α₀ = f · precision, then the fixed point α ← ψ⁻¹(ψ(Σα) + mean log p) until the step's L2 norm is
  below 1e-9 (at most 1000 rounds), ψ⁻¹ by Minka's start and 5 Newton steps. The normality of x
  is (1/72) Σ_t Σ_k (α_tk − 1) log p_k(T_t(x)); the anomaly score here is minus that.
  Fitted in `prepare_scoring` on the training images, kept as buffers (`dirichlet_alpha`).
- The simplified score (`score=simple`, the paper's): (1/72) Σ_t log p_t(T_t(x)), minus it here.

The training schedule. The code trains ⌈200/72⌉ = 3 epochs over the 72× enlarged set (every
normal image under all 72 transformations, shuffled) at batch 128: 3·⌈72N/128⌉ optimiser steps,
each on 128 (image, transformation) pairs drawn without replacement. Here every training batch
gives each of its images one transformation drawn uniformly on the device (torch.randint), so 72
epochs of this framework pass as many pairs and steps as one epoch of the code, and the paper
configs set trainer.max_epochs = 72·3 = 216 at batch 128: 216·⌈N/128⌉ steps, the code's count up
to rounding, each on 128 pairs of distinct images with uniformly distributed labels, as the
code's batches (mostly distinct images, multinomial labels). The one difference: over 72
epochs an (image, transformation) pair occurs a Poisson(1)-like number of times instead of
exactly once. The alternative, each batch carrying all 72 transformations of its images, would
either multiply the batch 72-fold (72× fewer steps) or shrink it to under 2 images per batch of
128 (batches of one image's transformations, strongly correlated), both further from the code.

Deviations, each deliberate:
- Log-probabilities come from log_softmax. The code takes np.log of float32 softmax outputs,
  which round to 0 for confident predictions: −inf in the score, NaN in the fit. The same
  values up to rounding wherever the code's are finite.
- The simplified score is the paper's mean log-probability; the code's (commented-out) version
  averages the probabilities themselves.
- The Dirichlet fit runs on sufficient statistics streamed over the training batches (mean p,
  mean log p per transformation: all the code's estimator reads), in float64, all 72 fits at
  once, each stopping at its own tolerance as the code's loop over transformations does. Where
  every output of a transformation is identical (no spread: the MLE does not exist) the
  precision's denominator is floored at 1e-12 instead of dividing by 0.
- Before the fit (validation epochs during training) score=dirichlet scores with the simplified
  score; the fit runs once training ends, before the final validation.
- Adam: torch's ε is added after the bias correction of √v, Keras's before (a negligible
  difference at ε 1e-7).
- Network details for sizes the code never ran: see anomaly.nets.wrn.
- The code runs each experiment 5 times and on the whole test set; the protocol decides here.

Scoring runs the 72 transformations of a chunk of images per forward pass (`score_chunk`: 4
images on a CPU, 64 on a GPU by default; one batch of transformed images, no loop over images
or transformations). The network's weights are kept channels-last, which makes its
convolutions run channels-last (faster on CPU, measured; the values equal up to rounding).
"""

from __future__ import annotations

import itertools
import logging
from typing import Annotated, Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F

from anomaly import AnomalyError
from anomaly.methods.base import VALUE_RANGES, AnomalyModule, ValueRange
from anomaly.nets.build import NetSpec, build_net, expect_output
from anomaly.settings.rules import (FRACTION, AtLeastOne, Betas, Count, Int, LearningRate, Net, NonNegative,
                                    Positive, Rule, is_int)
from anomaly.nets.wrn import WideResNet

log = logging.getLogger(__name__)


# ---- the 72 transformations ------------------------------------------------------------------------
def transformation_table(translation: int = 8) -> list[tuple[bool, int, int, int]]:
    """(flip, tx, ty, k) of each label, in the code's order: flip × tx × ty × k, tx and ty in
    (0, −translation, +translation), k quarter turns."""
    shifts = (0, -translation, translation)
    return list(itertools.product((False, True), shifts, shifts, range(4)))


TRANSFORMATIONS = transformation_table(8)
NUM_TRANSFORMATIONS = len(TRANSFORMATIONS)


def reflected_positions(size: int, shift: int) -> torch.Tensor:
    """Source positions i + shift of i = 0…size−1, reflected at the borders with the edge pixel
    repeated (scipy.ndimage mode="reflect"): −1 → 0, size → size − 1. |shift| ≤ size."""
    pos = torch.arange(size) + shift
    return torch.where(pos < 0, -1 - pos, torch.where(pos >= size, 2 * size - 1 - pos, pos))


def transformation_maps(size: int, translation: int = 8) -> torch.Tensor:
    """72 × size² source-pixel indices: transformation t of a flattened size×size image x is
    x[maps[t]]. Built by applying each transformation (flip, translate, rotate) to the image of
    pixel indices."""
    if not 0 < translation < size:
        raise AnomalyError(f"method.translation={translation}: must be in [1, {size - 1}] for "
                           f"{size}×{size} network inputs")
    index = torch.arange(size * size).reshape(size, size)
    maps = []
    for flip, tx, ty, k in transformation_table(translation):
        m = index.flip(1) if flip else index
        m = m[reflected_positions(size, tx)][:, reflected_positions(size, ty)]
        maps.append(torch.rot90(m, k, dims=(0, 1)).reshape(-1))
    return torch.stack(maps)


def apply_transformations(x: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image i of x (B×C×S×S) under transformation labels[i] (device ops only: one gather)."""
    b, c = x.shape[:2]
    index = maps.index_select(0, labels).unsqueeze(1).expand(b, c, -1)
    return x.flatten(2).gather(2, index).view_as(x)


def all_transformations(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Every transformation of every image: (B·T)×C×S×S, image-major (row i·T + t is T_t(x_i))."""
    b, c, h, w = x.shape
    out = x.flatten(2).index_select(2, maps.reshape(-1))  # B×C×(T·S²)
    return out.view(b, c, len(maps), h, w).transpose(1, 2).reshape(b * len(maps), c, h, w)


# ---- the Dirichlet normality score -----------------------------------------------------------------
def inverse_digamma(y: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """ψ⁻¹(y): Minka's starting point (exp(y) + ½ for y ≥ −2.22, else −1/(y − ψ(1))) and Newton
    steps, as the published code."""
    x = torch.where(y >= -2.22, y.exp() + 0.5, -1.0 / (y - torch.special.digamma(torch.ones_like(y))))
    for _ in range(iters):
        x = x - (torch.special.digamma(x) - y) / torch.special.polygamma(1, x)
    return x


def dirichlet_mle(mean_p: torch.Tensor, mean_log_p: torch.Tensor, max_iter: int = 1000,
                  tol: float = 1e-9) -> torch.Tensor:
    """Maximum-likelihood Dirichlet parameters of each row (…×K) from its observations' mean and
    mean log (the published fixed-point iteration, Minka's start; each row stops when its step's
    L2 norm is below tol)."""
    mean_p, mean_log_p = mean_p.double(), mean_log_p.double()
    k = mean_p.shape[-1]
    spread = (torch.special.xlogy(mean_p, mean_p) - mean_p * mean_log_p).sum(-1).clamp_min(1e-12)
    euler_gamma = -torch.special.digamma(torch.ones((), dtype=torch.float64, device=mean_p.device))
    alpha = mean_p * ((k - 1) * euler_gamma / spread).unsqueeze(-1)
    active = torch.ones(mean_p.shape[:-1], dtype=torch.bool, device=mean_p.device)
    for _ in range(max_iter):
        new = inverse_digamma(torch.special.digamma(alpha.sum(-1, keepdim=True)) + mean_log_p)
        step = (new - alpha).norm(dim=-1)
        alpha = torch.where(active.unsqueeze(-1), new, alpha)
        active = active & (step >= tol)
        if not bool(active.any()):
            break
    return alpha


def dirichlet_normality(log_p: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(1/T) Σ_t Σ_k (α_tk − 1) log p_k(T_t(x)) of log-probabilities B×T×K (higher = more normal)."""
    return ((alpha - 1) * log_p).sum((1, 2)) / log_p.shape[1]


def simple_normality(log_p: torch.Tensor) -> torch.Tensor:
    """(1/T) Σ_t log p_t(T_t(x)) of log-probabilities B×T×T (higher = more normal)."""
    return log_p.diagonal(dim1=1, dim2=2).mean(1)


class WrnDepth(Rule):
    """A wide residual network's depth: 6n + 4, n ≥ 1."""

    def ok(self, value: Any) -> bool:
        return is_int(value) and value >= 10 and (value - 4) % 6 == 0

    def describe(self) -> str:
        return "an integer 6n + 4 ≥ 10 (10, 16, 22, 28, …)"


# ---- the method ----------------------------------------------------------------------------------------
class GEOM(AnomalyModule):
    """A WRN classifier of the 72 transformations; Dirichlet (or simplified) normality score
    (see the module docstring).

    net: the classifier, images (padded) → 72 logits (injected; the default: the WRN of
    anomaly.nets.wrn, with its depth, widen_factor and dropout). translation: the shift in pixels
    (8: the code's for 32×32). pad: pixels added on each side before the network (2: 28×28 →
    32×32). score: dirichlet or simple. score_chunk: transformed images per forward pass when
    scoring (a multiple of 72 is used, at least 72; None: automatic, see `images_per_chunk`).
    """

    name: ClassVar[str] = "geom"
    def __init__(self, image_shape: Sequence[int],
                 net: Annotated[NetSpec, Net(depth=WrnDepth(), widen_factor=Int(low=1), dropout=FRACTION)]
                 = WideResNet, translation: AtLeastOne = 8, pad: Count = 0, lr: LearningRate = 1e-3,
                 betas: Betas = (0.9, 0.999), eps: Positive = 1e-7, weight_decay: NonNegative = 5e-4,
                 score: Literal["dirichlet", "simple"] = "dirichlet",
                 score_chunk: Annotated[int | None, Int(low=NUM_TRANSFORMATIONS,
                                                        null="automatic: 288 on a CPU, 4608 on a GPU")] = None,
                 value_range: ValueRange = "symmetric", **base) -> None:
        super().__init__(image_shape, value_range=value_range, **base)
        channels, size, _ = self.image_shape
        self.pad = int(pad)
        side = size + 2 * self.pad
        shape = (channels, side, side)
        self.net = build_net(net, "net", self.name, image_shape=shape, out_features=NUM_TRANSFORMATIONS)
        expect_output(self.net, "net", self.name, shape, (NUM_TRANSFORMATIONS,), "a logit per transformation")
        # channels-last weights: the convolutions run channels-last (on 2 CPU cores ~35 % faster
        # than NCHW for training and scoring, WRN-10-1 on 32×32; the values equal up to rounding)
        self.net.to(memory_format=torch.channels_last)
        self.register_buffer("maps", transformation_maps(side, int(translation)), persistent=False)
        self.lr, self.betas, self.eps = float(lr), tuple(float(b) for b in betas), float(eps)
        self.weight_decay = float(weight_decay)
        self.score_type = score
        self.score_chunk = None if score_chunk is None else int(score_chunk)
        # the Dirichlet parameters of each transformation (row t: α_t), fitted after training
        self.register_buffer("dirichlet_alpha", torch.ones(NUM_TRANSFORMATIONS, NUM_TRANSFORMATIONS,
                                                           dtype=torch.float64))
        self.register_buffer("dirichlet_fitted", torch.tensor(False))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, betas=self.betas, eps=self.eps,
                                weight_decay=self.weight_decay)

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """x with `pad` pixels of the value range's minimum (a 0 pixel) on each side."""
        if not self.pad:
            return x
        return F.pad(x, (self.pad,) * 4, value=VALUE_RANGES[self.value_range][0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transformation logits of (padded) network inputs."""
        return self.net(x)

    # ---- training ---------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.dirichlet_fitted.fill_(False)  # weights change: a fitted α no longer holds

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = self.padded(batch["image"])
        labels = torch.randint(NUM_TRANSFORMATIONS, (len(x),), device=x.device)
        logits = self(apply_transformations(x, self.maps, labels))
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
        self.log("train/accuracy", accuracy, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    # ---- scoring ----------------------------------------------------------------------------------
    def images_per_chunk(self, x: torch.Tensor) -> int:
        """Images whose 72 transformations go through the network at once: score_chunk // 72, or
        automatically 4 on a CPU (288 transformed images: larger chunks ran slower on 2 cores,
        their buffers no longer reused by the allocator, e.g. 1,900 against 1,400 images/s at
        1,152, WRN-10-1 on 32×32) and 64 on a GPU."""
        if self.score_chunk is not None:
            return self.score_chunk // NUM_TRANSFORMATIONS
        return 4 if x.device.type == "cpu" else 64

    def transformation_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p(·| T_t(x_i)): B×72×72 (float64), row t the network's log-softmax on T_t(x_i)."""
        x = self.padded(x)
        per_chunk = self.images_per_chunk(x)
        out = []
        for start in range(0, len(x), per_chunk):
            chunk = x[start:start + per_chunk]
            logits = self(all_transformations(chunk, self.maps))
            out.append(F.log_softmax(logits.double(), dim=1).view(len(chunk), NUM_TRANSFORMATIONS, -1))
        return torch.cat(out)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        log_p = self.transformation_log_probs(x)
        simple = simple_normality(log_p)
        if self.score_type == "simple":
            return -simple
        # the simplified score until the Dirichlet parameters are fitted (no host read)
        return -torch.where(self.dirichlet_fitted, dirichlet_normality(log_p, self.dirichlet_alpha), simple)

    @torch.no_grad()
    def prepare_scoring(self, train_batches) -> None:
        """Fit α_t of every transformation on the training images (score=dirichlet)."""
        if self.score_type != "dirichlet":
            return
        was_training = self.training
        self.eval()
        sum_p = torch.zeros_like(self.dirichlet_alpha)
        sum_log_p = torch.zeros_like(self.dirichlet_alpha)
        count = 0
        for batch in train_batches:
            log_p = self.transformation_log_probs(batch["image"])
            sum_p += log_p.exp().sum(0)
            sum_log_p += log_p.sum(0)
            count += len(log_p)
        self.train(was_training)
        if count == 0:
            raise AnomalyError("method=geom: no training images to fit the Dirichlet score on")
        log.info("GEOM: fitting %d Dirichlet distributions on %d training images", NUM_TRANSFORMATIONS, count)
        self.dirichlet_alpha.copy_(dirichlet_mle(sum_p / count, sum_log_p / count))
        self.dirichlet_fitted.fill_(True)

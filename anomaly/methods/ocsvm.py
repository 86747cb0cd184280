"""One-Class SVM baseline (`method=ocsvm`): scikit-learn's OneClassSVM with an RBF kernel on the
raw pixels (flattened, in [0, 1]), the baseline of the VAE novelty-detection experiment.

It runs inside the same Trainer flow as the deep methods: one training epoch collects the
training images (no optimiser, no gradient); when the epoch's batches are done (at the start of
the epoch's validation, which Lightning runs before `on_train_epoch_end`, or in that hook when no
validation runs) the SVM is fitted. The threshold, the test and the checkpoint then work as for
any method. `trainer.max_epochs` is taken as 1.

Score = −decision_function(x) = ρ − Σᵢ αᵢ exp(−γ‖x − svᵢ‖²): higher = more anomalous, positive
outside the SVM's region. The fitted SVM travels with the checkpoint as tensors (support
vectors, dual coefficients, intercept, γ: buffers), with no pickled scikit-learn object, so
checkpoints still load with weights_only=True; `score` computes the decision function in torch
from them, on any device.

ν: `nu` (the method config takes protocol.contamination where the protocol has one: the
published ν = 25/825, the impurity share; otherwise 0.1).

γ: `gammas`. By default one value, "scale": scikit-learn's label-free rule γ = 1 / (D · Var x)
(D pixels, Var x the variance of every training pixel value; scikit-learn's default since 0.22),
so nothing is chosen with labels: like every deep method here, the default OC-SVM sees only its
normal training images, and never reads a validation label. With several values
(`conf/method/ocsvm_tuned.yaml`) one SVM is fitted per γ and the one with the best validation
AUROC is kept: a choice made with the validation split's labelled anomalies (the test split is
never looked at), as Ruff et al. (ICML 2018) tuned their OC-SVM baseline and said so. Such a run
records it (`labelled_selection`, results.json) and the leaderboard shows it apart, unranked.
When validation has no anomalies to rank, "scale" is used.

Deliberate differences and bug fixes:
- Polarity (fix): the published comparison read `predict(x) > 0` (the SVM's *inlier* vote) as
  the anomaly prediction, so its reported F1 (0.931) scored inverted predictions. Here higher
  scores are more anomalous, like every method, and the threshold is fitted on validation.
- γ: the published code swept γ ∈ {1e-1 … 1e-9} and reported each against the test labels;
  here γ is the label-free "scale", or (ocsvm_tuned) chosen on validation AUROC.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Sequence

import numpy as np
import torch

from anomaly import AnomalyError
from anomaly.methods.base import AnomalyModule
from anomaly.evaluation.metrics import compute_metrics
from anomaly.settings.rules import Int, Nu, Positive, Rule, is_number

log = logging.getLogger("anomaly")

SVM_BUFFERS = ("support_vectors", "dual_coef")


def rbf_decision(x: torch.Tensor, support_vectors: torch.Tensor, dual_coef: torch.Tensor,
                 intercept: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """scikit-learn's OneClassSVM.decision_function for an RBF kernel, in float64:
    Σᵢ αᵢ exp(−γ‖x − svᵢ‖²) + intercept (intercept = −ρ) per row of x (B×D)."""
    x = x.double()
    sv = support_vectors.double()
    # ‖x − sv‖² expanded; clamped because rounding can make it slightly negative
    sq = (x.pow(2).sum(1, keepdim=True) + sv.pow(2).sum(1) - 2 * x @ sv.T).clamp_min(0)
    return torch.exp(-gamma.double() * sq) @ dual_coef.double() + intercept.double()


@dataclass(frozen=True)
class Gammas(Rule):
    """The config rule of the γ grid: positive numbers or "scale"."""

    def ok(self, value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        return bool(values) and all(v == "scale" or (is_number(v) and v > 0) for v in values)

    def describe(self) -> str:
        return "a non-empty list of numbers > 0 or scale"


class OneClassSVM(AnomalyModule):
    """RBF One-Class SVM on flattened pixels (see the module docstring).

    nu: ν ∈ (0, 1]; gammas: the γ grid (numbers or "scale"); tol, cache_size: scikit-learn's
    (cache in MB: more is faster on large training sets); max_train: fit on at most this many
    training images (a seeded random subset; null: all — the fit is O(n²) to O(n³)).
    """

    name = "ocsvm"
    # its schedule is one epoch, whatever trainer.max_epochs says (see on_fit_start)
    stage_settings: ClassVar[dict[str, str]] = {"fit": "method.fit_epochs"}
    fit_epochs = 1
    def __init__(self, image_shape: Sequence[int], nu: Nu = 0.1,
                 gammas: Annotated[Sequence[float | str], Gammas()] = ("scale",),
                 tol: Positive = 1e-3, cache_size: Positive = 500.0,
                 max_train: Annotated[int | None, Int(low=2, null="all training images")] = None,
                 **base) -> None:
        super().__init__(image_shape, **base)
        gammas = [gammas] if isinstance(gammas, (int, float, str)) else list(gammas)
        self.automatic_optimization = False
        self.nu = float(nu)
        self.gammas = [g if g == "scale" else float(g) for g in gammas]
        self.tol = float(tol)
        self.cache_size = float(cache_size)
        self.max_train = None if max_train is None else int(max_train)
        features = math.prod(self.image_shape)
        # an unfitted SVM: no support vectors; `_load_from_state_dict` resizes them to a checkpoint's
        self.register_buffer("support_vectors", torch.zeros(0, features, dtype=torch.float64))
        self.register_buffer("dual_coef", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("intercept", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("gamma", torch.tensor(math.nan, dtype=torch.float64))
        self._train_images: list[torch.Tensor] = []
        self._fitted_shapes: list[tuple[int, int, int]] = []  # (rows, columns, D) of each kernel computed

    # ---- fitting: one epoch that only collects the images ---------------------------------------
    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            raise AnomalyError("method=ocsvm fits in one process: use one device (trainer=default)")
        if self.trainer.val_check_interval != 1.0:  # validation mid-epoch would find no SVM yet
            raise AnomalyError(f"method=ocsvm validates after its one epoch: trainer.val_check_interval="
                               f"{self.trainer.val_check_interval} must be 1.0")
        loop = self.trainer.fit_loop
        if loop.max_epochs != 1:  # one pass collects every training image; more would repeat it
            log.info("method=ocsvm fits once: trainer.max_epochs=%s is taken as 1", loop.max_epochs)
            loop.max_epochs = 1
        loop.min_epochs = min(loop.min_epochs or 0, 1)

    def on_train_epoch_start(self) -> None:
        self._train_images = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # kept where they are until the epoch ends: one copy to the host then, not one per batch
        self._train_images.append(batch["image"].detach().flatten(1))

    def on_validation_start(self) -> None:
        if self._train_images:  # the epoch's batches are done and validation needs the SVM
            self._fit_collected()
        super().on_validation_start()

    def on_train_epoch_end(self) -> None:
        if self._train_images:  # no validation ran in this epoch
            self._fit_collected()
        if not self.fitted:
            raise AnomalyError("method=ocsvm saw no training batch (is limit_train_batches 0?)")
        self.log("train/gamma", float(self.gamma))
        self.log("train/support_vectors", float(len(self.support_vectors)))

    def _fit_collected(self) -> None:
        """Fit on the collected training images and store the SVM: with one γ, from the training
        images alone (no validation label is read); with several, the best on validation AUROC."""
        train = torch.cat(self._train_images).cpu().double().numpy()
        self._train_images = []
        if self.max_train is not None and len(train) > self.max_train:
            rng = np.random.default_rng(0)
            train = train[np.sort(rng.choice(len(train), self.max_train, replace=False))]
        self._fitted_shapes = []
        if len(self.gammas) == 1:
            self._keep_svm(self._fit(train, self.gammas[0]))
            return
        val = self._validation_images()  # labelled anomalies: only the tuned variant reads them
        if val is None:
            log.info("method=ocsvm: validation has no anomalies to rank γ by: γ = 'scale'")
            self._keep_svm(self._fit(train, "scale"))
            return
        images, anomalous = val
        best = None
        for gamma in self.gammas:
            svm = self._fit(train, gamma)
            score = -torch.from_numpy(svm.decision_function(images))
            self._fitted_shapes.append((len(images), len(svm.support_), images.shape[1]))  # scored too
            auroc = compute_metrics(score, anomalous, math.nan)["auroc"]
            log.info("method=ocsvm: γ=%s (%.3g) → validation AUROC %.4f, %d support vectors",
                     gamma, svm.gamma, auroc, len(svm.support_))
            if best is None or auroc > best[0]:  # the first of equals: the grid's order decides
                best = (auroc, svm, gamma)
        self._keep_svm(best[1])
        self.labelled_selection = (f"γ = {best[2]} chosen from {self.gammas} by validation AUROC, on "
                                   f"{int(anomalous.sum())} labelled anomalies")

    def _fit(self, train: np.ndarray, gamma: float | str):
        from sklearn.svm import OneClassSVM as SkOneClassSVM

        if gamma == "scale":  # scikit-learn's rule, resolved here so the value used is known
            gamma = 1.0 / (train.shape[1] * train.var())
        self._fitted_shapes.append((len(train), len(train), train.shape[1]))
        return SkOneClassSVM(kernel="rbf", nu=self.nu, gamma=gamma, tol=self.tol,
                             cache_size=self.cache_size).fit(train)

    def untracked_training_flops(self) -> float:
        """libsvm's work, estimated as one evaluation of every kernel entry it needs: per fit the
        n × n Gram matrix of the training images (2·D FLOPs an entry: a lower bound, its solver
        may evaluate rows again), per γ tried the validation images against its support vectors."""
        return float(sum(2 * rows * cols * features for rows, cols, features in self._fitted_shapes))

    def _validation_images(self) -> tuple[np.ndarray, torch.Tensor] | None:
        """All validation images (flattened) and their labels, or None when there is nothing to
        rank: no datamodule, or validation without both normals and anomalies."""
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None:
            return None
        images, anomalous = [], []
        for batch in self.device_batches(dm.val_dataloader()):
            images.append(batch["image"].flatten(1).cpu())
            anomalous.append(batch["anomalous"].cpu())
        anomalous = torch.cat(anomalous) if anomalous else torch.zeros(0, dtype=torch.bool)
        if not 0 < int(anomalous.sum()) < len(anomalous):
            return None
        return torch.cat(images).double().numpy(), anomalous

    def _keep_svm(self, svm) -> None:
        """Keep the fitted SVM as buffers (what the checkpoint carries)."""
        device = self.support_vectors.device
        self.support_vectors = torch.as_tensor(svm.support_vectors_, dtype=torch.float64, device=device)
        self.dual_coef = torch.as_tensor(svm.dual_coef_[0], dtype=torch.float64, device=device)
        self.intercept.fill_(float(svm.intercept_[0]))
        self.gamma.fill_(float(svm.gamma))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args, **kwargs) -> None:
        # the number of support vectors is known only from the checkpoint: take its shapes
        for key in SVM_BUFFERS:
            saved = state_dict.get(prefix + key)
            if saved is not None:
                setattr(self, key, torch.empty_like(saved, device=getattr(self, key).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def configure_optimizers(self):
        return None

    # ---- scoring ---------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return len(self.support_vectors) > 0

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """The SVM's decision function (positive inside its region = normal)."""
        if not self.fitted:
            raise AnomalyError("method=ocsvm is not fitted yet (no support vectors): train it first")
        return rbf_decision(x.flatten(1), self.support_vectors, self.dual_coef, self.intercept, self.gamma)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -self.decision_function(x)

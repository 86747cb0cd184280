"""gpnd_folds: GPND's protocol (Pidhorskyi et al. 2018), all images pooled in fixed per-class
folds; test = one fold, validation = the next, outliers at `outlier_ratio`.
"""

from __future__ import annotations

import numpy as np

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Protocol, Split, check_fraction


def gpnd_fold_of(labels: np.ndarray, n_folds: int = 5, fold_seed: int = 0) -> np.ndarray:
    """The fold of every image: each class's images in a `fold_seed` permutation, cut into
    `n_folds` equal parts (the same for every run of every class)."""
    fold_rng = np.random.default_rng(fold_seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        for f, part in enumerate(np.array_split(idx[fold_rng.permutation(len(idx))], n_folds)):
            fold_of[part] = f
    return fold_of


def gpnd_folds_split(labels: np.ndarray, normal: list[int], fold: int, outlier_ratio: float,
                     n_folds: int = 5, fold_seed: int = 0, seed: int = 0) -> Split:
    """GPND's protocol: all images pooled, each class split into `n_folds` equal folds (fixed
    `fold_seed`, the same for every run). Test = fold `fold`, validation = fold (fold+1) mod
    n_folds, train = the other folds' images of the normal classes. Validation and test keep all
    their normal images and draw int(n·p/(1−p)) outliers at random from their fold's other
    classes (the 2018 code; the 2020 code repeated inliers instead)."""
    if not 0 <= fold < n_folds:
        raise AnomalyError(f"protocol.fold={fold} must be one of 0…{n_folds - 1}")
    p = check_fraction("protocol.outlier_ratio", outlier_ratio)
    fold_of = gpnd_fold_of(labels, n_folds, fold_seed)
    is_normal = np.isin(labels, normal)
    val_fold = (fold + 1) % n_folds
    train = np.flatnonzero(is_normal & (fold_of != fold) & (fold_of != val_fold))
    rng = np.random.default_rng(seed)

    def with_outliers(f: int) -> np.ndarray:
        inliers = np.flatnonzero(is_normal & (fold_of == f))
        outliers = np.flatnonzero(~is_normal & (fold_of == f))
        n_out = int(len(inliers) * p / (1 - p))
        if n_out > len(outliers):
            raise AnomalyError(f"protocol.outlier_ratio={p} needs {n_out} outliers in fold {f} "
                               f"but it has only {len(outliers)}")
        # a prefix of one seeded permutation: each share's outliers are a uniform draw, and a
        # smaller share's are a subset of a larger one's (the five shares of a fold are then
        # scored once: anomaly.reproduce caches scores by image)
        return np.sort(np.concatenate([inliers, rng.permutation(outliers)[:n_out]]))

    test = with_outliers(fold)
    val = with_outliers(val_fold)
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


class GPNDFolds(Protocol):
    name = "gpnd_folds"

    def __init__(self, normal=None, fold: int = 0, outlier_ratio: float = 0.5, n_folds: int = 5,
                 fold_seed: int = 0, seed: int = 0, anomalous=None) -> None:
        super().__init__(normal, seed, anomalous)
        self.n_folds = int(n_folds)
        if not 0 <= int(fold) < self.n_folds:
            raise AnomalyError(f"protocol.fold={fold} must be one of 0…{self.n_folds - 1}")
        self.fold = int(fold)
        self.outlier_ratio = check_fraction("protocol.outlier_ratio", outlier_ratio)
        self.fold_seed = int(fold_seed)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return gpnd_folds_split(data.labels.numpy(), normal, self.fold, self.outlier_ratio,
                                self.n_folds, self.fold_seed, self.seed)


"""Protocols: which images train, validate and test a method, and which of them are anomalies.

Each protocol is a pure function of (labels, settings, seed) returning index arrays; the small
classes around them only resolve class names and carry config. Validation data always comes
from outside the test split: thresholds and model selection never see the test set.
Adding a protocol = one function + one class here + one config in `conf/protocol/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from anomaly import AnomalyError
from anomaly.data.datasets import ImageSet


@dataclass
class Split:
    """Indices into an ImageSet for each split, and which of them are anomalous."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_anomalous: np.ndarray
    val_anomalous: np.ndarray
    test_anomalous: np.ndarray
    normal_classes: list[int] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train), "val": len(self.val), "test": len(self.test),
            "train_anomalies": int(self.train_anomalous.sum()),
            "val_anomalies": int(self.val_anomalous.sum()),
            "test_anomalies": int(self.test_anomalous.sum()),
        }

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, train=self.train, val=self.val, test=self.test,
                            train_anomalous=self.train_anomalous, val_anomalous=self.val_anomalous,
                            test_anomalous=self.test_anomalous,
                            normal_classes=np.asarray(self.normal_classes, dtype=np.int64))

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["normal_classes"] = arrays["normal_classes"].tolist()
        return cls(**arrays)


def resolve_classes(normal: Sequence[int | str] | int | str | None, class_names: Sequence[str],
                    dataset: str = "dataset") -> list[int]:
    """Turn `protocol.normal` (class ids or class names) into a sorted list of class ids."""
    if normal is None or (isinstance(normal, (list, tuple)) and len(normal) == 0):
        raise AnomalyError("protocol.normal is empty: give at least one normal class, e.g. "
                           "protocol.normal=[0]")
    if isinstance(normal, (int, str)):
        normal = [normal]
    n = len(class_names)
    ids = []
    for value in normal:
        if isinstance(value, str) and value in class_names:
            ids.append(class_names.index(value))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < n:
            ids.append(int(value))
        else:
            shown = ", ".join(class_names) if n <= 26 else f"{class_names[0]} … {class_names[-1]}"
            raise AnomalyError(f"protocol.normal: unknown class {value!r} for dataset {dataset}; "
                               f"classes are ids 0…{n - 1} or names [{shown}]")
    if len(set(ids)) != len(ids):
        raise AnomalyError(f"protocol.normal={list(normal)} names a class twice")
    if len(ids) == n:
        raise AnomalyError(f"protocol.normal={list(normal)} covers every class of {dataset}: "
                           "nothing is left to be anomalous")
    return sorted(ids)


def _check_fraction(name: str, value: float) -> float:
    if not (0.0 < float(value) < 1.0):
        raise AnomalyError(f"{name}={value} must be in (0, 1)")
    return float(value)


def one_class_split(labels: np.ndarray, official_test: np.ndarray, normal: list[int],
                    val_fraction: float = 0.1, val_anomalies: bool = True, seed: int = 0) -> Split:
    """Train on the normal classes' official-train images; test on the whole official test split.

    (ARAE's "p2", Deep SVDD's protocol.) Validation: `val_fraction` of the official train split,
    drawn per class so it has the test split's class mix (with anomalies, for an F1 threshold);
    with `val_anomalies=False` only normal images are held out (quantile threshold).
    """
    val_fraction = _check_fraction("protocol.val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    is_normal = np.isin(labels, normal)
    train_pool = np.flatnonzero(~official_test)
    val, train = [], []
    for c in np.unique(labels[train_pool]):
        if not val_anomalies and c not in normal:
            continue
        idx = train_pool[labels[train_pool] == c]
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        if c in normal:
            train.append(idx[n_val:])
    train = np.sort(np.concatenate(train)) if train else np.empty(0, np.int64)
    val = np.sort(np.concatenate(val)) if val else np.empty(0, np.int64)
    test = np.flatnonzero(official_test)
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


def anomaly_ratio_split(labels: np.ndarray, normal: list[int], anomaly_ratio: float,
                        train_fraction: float = 0.6, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """ARAE's "p1": all images pooled; the normal classes split 60/20/20 into train/val/test.

    Anomalies drawn at random from the other classes are added to validation and test so they
    make `anomaly_ratio` of each (test: int(n_test·p/(1−p)); validation: a disjoint set drawn the
    same way). The published code shuffled without a seed; here the seed is explicit.
    """
    p = _check_fraction("protocol.anomaly_ratio", anomaly_ratio)
    if not (0 < train_fraction and 0 < val_fraction and train_fraction + val_fraction < 1):
        raise AnomalyError(f"protocol.train_fraction={train_fraction} and protocol.val_fraction="
                           f"{val_fraction} must be positive and sum to less than 1")
    rng = np.random.default_rng(seed)
    is_normal = np.isin(labels, normal)
    normals = np.flatnonzero(is_normal)
    normals = normals[rng.permutation(len(normals))]
    n_train = int(train_fraction * len(normals))
    n_val = int(val_fraction * len(normals))
    train, val_n, test_n = normals[:n_train], normals[n_train:n_train + n_val], normals[n_train + n_val:]
    others = np.flatnonzero(~is_normal)
    others = others[rng.permutation(len(others))]
    n_test_anom = int(len(test_n) * p / (1 - p))
    n_val_anom = int(len(val_n) * p / (1 - p))
    if n_test_anom + n_val_anom > len(others):
        raise AnomalyError(f"protocol.anomaly_ratio={p} needs {n_test_anom + n_val_anom} anomalies "
                           f"but the other classes have only {len(others)} images")
    test = np.sort(np.concatenate([test_n, others[:n_test_anom]]))
    val = np.sort(np.concatenate([val_n, others[n_test_anom:n_test_anom + n_val_anom]]))
    train = np.sort(train)
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


def gpnd_folds_split(labels: np.ndarray, normal: list[int], fold: int, outlier_ratio: float,
                     n_folds: int = 5, fold_seed: int = 0, seed: int = 0) -> Split:
    """GPND's protocol: all images pooled, each class split into `n_folds` equal folds (fixed
    `fold_seed`, the same for every run). Test = fold `fold`, validation = fold (fold+1) mod
    n_folds, train = the other folds' images of the normal classes. Validation and test keep all
    their normal images and draw int(n·p/(1−p)) outliers at random from their fold's other
    classes (the 2018 code; the 2020 code repeated inliers instead)."""
    if not 0 <= fold < n_folds:
        raise AnomalyError(f"protocol.fold={fold} must be one of 0…{n_folds - 1}")
    p = _check_fraction("protocol.outlier_ratio", outlier_ratio)
    fold_rng = np.random.default_rng(fold_seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        for f, part in enumerate(np.array_split(idx[fold_rng.permutation(len(idx))], n_folds)):
            fold_of[part] = f
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
        return np.sort(np.concatenate([inliers, rng.choice(outliers, n_out, replace=False)]))

    test = with_outliers(fold)
    val = with_outliers(val_fold)
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


class Protocol:
    """Base for protocol configs: `split(data)` resolves class names and calls the function.

    `threshold_strategy` is the F1 convention of the protocol's paper, used when the config says
    `threshold.strategy=auto`.
    """

    name = "protocol"
    threshold_strategy = "f1"

    def __init__(self, normal: Sequence[int | str] | None = None, seed: int = 0) -> None:
        self.normal = list(normal) if isinstance(normal, (list, tuple)) else normal
        self.seed = int(seed)

    def split(self, data: ImageSet) -> Split:
        normal = resolve_classes(self.normal, data.class_names, data.name)
        split = self._split(data, normal)
        for part in ("train", "val", "test"):
            if len(getattr(split, part)) == 0:
                raise AnomalyError(f"protocol {self.name} on {data.name} with normal={normal} "
                                   f"left the {part} split empty")
        return split

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        raise NotImplementedError

    def describe(self) -> dict:
        """The protocol's settings, for results files."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


class OneClass(Protocol):
    name = "one_class"

    def __init__(self, normal=None, val_fraction: float = 0.1, val_anomalies: bool = True,
                 seed: int = 0) -> None:
        super().__init__(normal, seed)
        self.val_fraction = float(_check_fraction("protocol.val_fraction", val_fraction))
        self.val_anomalies = bool(val_anomalies)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        if data.official_test is None:
            raise AnomalyError(f"protocol one_class needs an official test split and dataset "
                               f"{data.name} has none; use protocol=anomaly_ratio")
        return one_class_split(data.labels.numpy(), data.official_test.numpy(), normal,
                               self.val_fraction, self.val_anomalies, self.seed)


class AnomalyRatio(Protocol):
    name = "anomaly_ratio"

    def __init__(self, normal=None, anomaly_ratio: float = 0.1, train_fraction: float = 0.6,
                 val_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__(normal, seed)
        self.anomaly_ratio = _check_fraction("protocol.anomaly_ratio", anomaly_ratio)
        self.train_fraction = float(train_fraction)
        self.val_fraction = float(val_fraction)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return anomaly_ratio_split(data.labels.numpy(), normal, self.anomaly_ratio,
                                   self.train_fraction, self.val_fraction, self.seed)


class GPNDFolds(Protocol):
    name = "gpnd_folds"
    threshold_strategy = "f1_inlier"  # GPND reports F1 with inliers as the positive class

    def __init__(self, normal=None, fold: int = 0, outlier_ratio: float = 0.5, n_folds: int = 5,
                 fold_seed: int = 0, seed: int = 0) -> None:
        super().__init__(normal, seed)
        self.n_folds = int(n_folds)
        if not 0 <= int(fold) < self.n_folds:
            raise AnomalyError(f"protocol.fold={fold} must be one of 0…{self.n_folds - 1}")
        self.fold = int(fold)
        self.outlier_ratio = _check_fraction("protocol.outlier_ratio", outlier_ratio)
        self.fold_seed = int(fold_seed)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return gpnd_folds_split(data.labels.numpy(), normal, self.fold, self.outlier_ratio,
                                self.n_folds, self.fold_seed, self.seed)

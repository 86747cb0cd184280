"""one_class: train on the normal classes' official-train images, test on the whole official test
split (ARAE's "p2", Deep SVDD's protocol).
"""

from __future__ import annotations

import numpy as np

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Protocol, Split, check_fraction


def one_class_split(labels: np.ndarray, official_test: np.ndarray, normal: list[int],
                    val_fraction: float = 0.1, val_anomalies: bool = True, seed: int = 0,
                    n_train: int | None = None, n_test: int | None = None) -> Split:
    """Train on the normal classes' official-train images; test on the whole official test split.

    (ARAE's "p2", Deep SVDD's protocol.) Validation: `val_fraction` of the official train split,
    drawn per class so it has the test split's class mix (with anomalies, for an F1 threshold);
    with `val_anomalies=False` only normal images are held out (quantile threshold).
    `n_train`: train on that many of the normal training images (a seeded subset drawn after
    validation, for learning curves over the training-set size); None: all of them.
    `n_test`: test on that many of the official test images, drawn per class in the test split's
    class mix (largest remainders; a seeded stream of its own, so train and validation are those of
    the whole test split), for budgets that cannot score all of them; None: all of them.
    """
    val_fraction = check_fraction("protocol.val_fraction", val_fraction)
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
    if n_train is not None:
        if n_train > len(train):
            raise AnomalyError(f"protocol.n_train={n_train} but the normal classes have only "
                               f"{len(train)} training images")
        train = np.sort(rng.permutation(train)[:n_train])
    val = np.sort(np.concatenate(val)) if val else np.empty(0, np.int64)
    test = np.flatnonzero(official_test)
    if n_test is not None:
        test = stratified_subset(test, labels[test], n_test, np.random.default_rng([seed, 1]), "protocol.n_test")
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


def stratified_subset(idx: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator,
                      key: str) -> np.ndarray:
    """n of idx, sorted, each class in proportion to its share of idx (largest remainders)."""
    if n > len(idx):
        raise AnomalyError(f"{key}={n} but there are only {len(idx)} images to draw from")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(idx)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[: n - int(take.sum())]] += 1
    chosen = [rng.permutation(idx[labels == c])[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


class OneClass(Protocol):
    name = "one_class"

    def __init__(self, normal=None, val_fraction: float = 0.1, val_anomalies: bool = True,
                 seed: int = 0, anomalous=None, n_train: int | None = None,
                 n_test: int | None = None) -> None:
        super().__init__(normal, seed, anomalous)
        self.val_fraction = float(check_fraction("protocol.val_fraction", val_fraction))
        self.val_anomalies = bool(val_anomalies)
        if n_train is not None and (isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1):
            raise AnomalyError(f"protocol.n_train={n_train} must be a positive integer, or null for every "
                               "training image")
        self.n_train = None if n_train is None else int(n_train)
        if n_test is not None and (isinstance(n_test, bool) or int(n_test) != n_test or n_test < 1):
            raise AnomalyError(f"protocol.n_test={n_test} must be a positive integer, or null for the whole "
                               "test split")
        self.n_test = None if n_test is None else int(n_test)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        if data.official_test is None:
            raise AnomalyError(f"protocol one_class needs an official test split and dataset "
                               f"{data.name} has none; use protocol=anomaly_ratio")
        return one_class_split(data.labels.numpy(), data.official_test.numpy(), normal,
                               self.val_fraction, self.val_anomalies, self.seed, self.n_train, self.n_test)


"""holdout_class: ADAE's protocol (Vu et al. 2019), one class is the anomaly and every other class
is normal.
"""

from __future__ import annotations

import numpy as np

from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Protocol, Split, check_fraction, check_share


def holdout_class_split(labels: np.ndarray, normal: list[int], train_fraction: float = 0.8,
                        val_fraction: float = 0.1, val_anomaly_fraction: float = 0.1,
                        seed: int = 0) -> Split:
    """ADAE's protocol (Vu et al. 2019): all images pooled (official train + test); the normal
    classes split `train_fraction` / rest into the paper's training share and test share; the
    test is the test share of the normals plus the anomalous class(es).

    Per normal class (so every split has the same class mix): `train_fraction` of its images are
    the training share, the rest go to test. Validation normals are `val_fraction` of the
    training share (the networks then train on (1 − val_fraction)·train_fraction of the normals,
    72 % with the defaults; the test normals stay exactly the paper's 20 %). Validation
    anomalies: `val_anomaly_fraction` of each anomalous class, taken out of the test so that no
    image is in two splits (the paper tests on the whole anomaly class; the AUROC on the other
    90 % estimates the same quantity). `val_anomaly_fraction=0` keeps the paper's test exactly and
    leaves validation with normals only (quantile threshold, like the published code's threshold
    from normal scores).
    """
    train_fraction = check_fraction("protocol.train_fraction", train_fraction)
    val_fraction = check_fraction("protocol.val_fraction", val_fraction)
    val_anomaly_fraction = check_share("protocol.val_anomaly_fraction", val_anomaly_fraction)
    rng = np.random.default_rng(seed)
    is_normal = np.isin(labels, normal)
    train, val, test = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if c in normal:
            n_share = int(round(train_fraction * len(idx)))
            n_val = int(round(val_fraction * n_share))
            val.append(idx[:n_val])
            train.append(idx[n_val:n_share])
            test.append(idx[n_share:])
        else:
            n_val = int(round(val_anomaly_fraction * len(idx)))
            val.append(idx[:n_val])
            test.append(idx[n_val:])
    train, val, test = (np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in (train, val, test))
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


class HoldoutClass(Protocol):
    """ADAE's protocol: one class is the anomaly, the others are normal (see holdout_class_split)."""

    name = "holdout_class"
    default_normal = None
    default_anomalous = [0]

    def __init__(self, normal=None, anomalous=None, train_fraction: float = 0.8,
                 val_fraction: float = 0.1, val_anomaly_fraction: float = 0.1, seed: int = 0) -> None:
        super().__init__(normal, seed, anomalous)
        self.train_fraction = check_fraction("protocol.train_fraction", train_fraction)
        self.val_fraction = check_fraction("protocol.val_fraction", val_fraction)
        self.val_anomaly_fraction = check_share("protocol.val_anomaly_fraction", val_anomaly_fraction)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return holdout_class_split(data.labels.numpy(), normal, self.train_fraction, self.val_fraction,
                                   self.val_anomaly_fraction, self.seed)


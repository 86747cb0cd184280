"""anomaly_ratio: ARAE's "p1", all images pooled, the normal classes split 60/20/20 and anomalies
added to validation and test at `anomaly_ratio`.
"""

from __future__ import annotations

import numpy as np

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Protocol, Split, check_fraction


def anomaly_ratio_split(labels: np.ndarray, normal: list[int], anomaly_ratio: float,
                        train_fraction: float = 0.6, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """ARAE's "p1": all images pooled; the normal classes split 60/20/20 into train/val/test.

    Anomalies drawn at random from the other classes are added to validation and test so they
    make `anomaly_ratio` of each (test: int(n_test·p/(1−p)); validation: a disjoint set drawn the
    same way). The published code shuffled without a seed; here the seed is explicit.
    """
    p = check_fraction("protocol.anomaly_ratio", anomaly_ratio)
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
    # test anomalies from the front of one seeded permutation, validation's from its back: disjoint,
    # and a smaller share's anomalies are a subset of a larger one's (scored once across shares)
    test = np.sort(np.concatenate([test_n, others[:n_test_anom]]))
    val = np.sort(np.concatenate([val_n, others[len(others) - n_val_anom:]]))
    train = np.sort(train)
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


class AnomalyRatio(Protocol):
    name = "anomaly_ratio"

    def __init__(self, normal=None, anomaly_ratio: float = 0.1, train_fraction: float = 0.6,
                 val_fraction: float = 0.2, seed: int = 0, anomalous=None) -> None:
        super().__init__(normal, seed, anomalous)
        self.anomaly_ratio = check_fraction("protocol.anomaly_ratio", anomaly_ratio)
        self.train_fraction = float(train_fraction)
        self.val_fraction = float(val_fraction)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return anomaly_ratio_split(data.labels.numpy(), normal, self.anomaly_ratio,
                                   self.train_fraction, self.val_fraction, self.seed)


"""contamination: the VAE paper's contaminated one-class setting, every split (training too) is
the normal class(es) plus impurities evenly drawn from the other classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Protocol, Split, check_fraction


def impurity_count(n_normal: int, contamination: float) -> int:
    """How many impurities make `contamination` of a split that holds `n_normal` normal images
    (rounded: the realised share is within half an image of the asked one)."""
    return int(round(n_normal * contamination / (1.0 - contamination)))


def spread_evenly(total: int, classes: Sequence[int], rng: np.random.Generator) -> dict[int, int]:
    """`total` images over `classes` as evenly as possible: total // K each, and one more for
    total % K of them, drawn at random (so no class is favoured run after run)."""
    base, extra = divmod(int(total), len(classes))
    counts = {int(c): base for c in classes}
    for c in rng.choice(np.asarray(classes), size=extra, replace=False):
        counts[int(c)] += 1
    return counts


def contamination_split(labels: np.ndarray, official_test: np.ndarray, normal: list[int],
                        contamination: float, val_fraction: float = 1 / 6, n_train: int | None = None,
                        n_val: int | None = None, n_test: int | None = None, seed: int = 0,
                        class_names: Sequence[str] | None = None) -> Split:
    """The VAE paper's EMNIST experiment: every split is the normal class(es) plus impurities
    drawn evenly from the other classes, making `contamination` of train, validation and test
    alike (training is contaminated too, and its impurities are marked anomalous).

    Normals: validation = `n_val` (null: `val_fraction`) of the official-train normals, train =
    `n_train` (null: all) of the rest, test = `n_test` (null: all) of the official-test normals.
    Each split then gets round(n·c/(1−c)) impurities, split evenly over the other classes; train
    and validation impurities come from the official train split (disjoint), test impurities
    from the official test split. Published (EMNIST letters, A normal, c = 1/33): 4,000 A + 125
    others (5 per letter) / 800 + 25 / 800 + 25, which are this function's defaults on that set
    (4,800 A in the train split, val_fraction 1/6).
    """
    c = check_fraction("protocol.contamination", contamination)
    name = (lambda k: repr(class_names[k])) if class_names is not None else (lambda k: str(k))
    rng = np.random.default_rng(seed)
    is_normal = np.isin(labels, normal)
    official_test = np.asarray(official_test, dtype=bool)

    def take(pool: np.ndarray, count: int | None, key: str, what: str) -> np.ndarray:
        if count is None:
            return pool
        if count > len(pool):
            raise AnomalyError(f"{key}={count} but only {len(pool)} {what} are available "
                               f"(normal={[name(k) for k in normal]})")
        return pool[:count]

    pool = np.flatnonzero(is_normal & ~official_test)
    pool = pool[rng.permutation(len(pool))]
    val_count = int(round(check_fraction("protocol.val_fraction", val_fraction) * len(pool))) \
        if n_val is None else n_val
    val_n = take(pool, val_count, "protocol.n_val", "normal images of the official train split")
    train_n = take(pool[len(val_n):], n_train, "protocol.n_train",
                   "normal images of the official train split after validation's")
    test_pool = np.flatnonzero(is_normal & official_test)
    test_n = take(test_pool[rng.permutation(len(test_pool))], n_test, "protocol.n_test",
                  "normal images of the official test split")

    others = [int(k) for k in np.unique(labels[~is_normal])]
    if not others:
        raise AnomalyError("protocol contamination needs at least one class outside "
                           f"normal={[name(k) for k in normal]}")
    wanted = {part: impurity_count(len(n), c) for part, n in (("train", train_n), ("val", val_n),
                                                               ("test", test_n))}
    per_class = {part: spread_evenly(count, others, rng) for part, count in wanted.items()}
    impurities: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for k in others:
        for parts, in_test in ((("train", "val"), False), (("test",), True)):
            idx = np.flatnonzero((labels == k) & (official_test == in_test))
            need = [per_class[p][k] for p in parts]
            if sum(need) > len(idx):
                split_name = "test" if in_test else "train"
                detail = " + ".join(f"{n} ({p})" for n, p in zip(need, parts))
                raise AnomalyError(f"protocol.contamination={c} needs {detail} impurities of class "
                                   f"{name(k)} from the official {split_name} split, which has only "
                                   f"{len(idx)}: lower protocol.contamination or the normal counts")
            idx = idx[rng.permutation(len(idx))]
            start = 0
            for p, n in zip(parts, need):
                impurities[p].append(idx[start:start + n])
                start += n

    def assemble(normals: np.ndarray, part: str) -> np.ndarray:
        return np.sort(np.concatenate([normals, *impurities[part]])).astype(np.int64)

    train, val, test = assemble(train_n, "train"), assemble(val_n, "val"), assemble(test_n, "test")
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


class Contamination(Protocol):
    """The VAE paper's contaminated one-class setting (see contamination_split).

    Its config picks the paper's threshold, contamination_quantile: the (1 − contamination)
    quantile of the training + validation scores. It uses only the expected impurity share,
    which this protocol knows by construction; the validation split also holds labelled
    impurities, so threshold=f1 / f1_inlier works as well.
    """

    name = "contamination"

    def __init__(self, normal=None, contamination: float = 1 / 33, val_fraction: float = 1 / 6,
                 n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
                 seed: int = 0, anomalous=None) -> None:
        super().__init__(normal, seed, anomalous)
        self.contamination = check_fraction("protocol.contamination", contamination)
        self.val_fraction = check_fraction("protocol.val_fraction", val_fraction)
        for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise AnomalyError(f"protocol.{key}={value} must be a positive integer, or null for "
                                   "every image available")
        self.n_train = None if n_train is None else int(n_train)
        self.n_val = None if n_val is None else int(n_val)
        self.n_test = None if n_test is None else int(n_test)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        if data.official_test is None:
            raise AnomalyError(f"protocol contamination needs an official test split and dataset "
                               f"{data.name} has none; use protocol=anomaly_ratio")
        return contamination_split(data.labels.numpy(), data.official_test.numpy(), normal,
                                   self.contamination, self.val_fraction, self.n_train, self.n_val,
                                   self.n_test, self.seed, data.class_names)


"""Protocols: which images train, validate and test a method, and which of them are anomalies.

Each protocol is a pure function of (labels, settings, seed) returning index arrays; the small
classes around them only resolve class names and carry config. Validation data always comes
from outside the test split: thresholds and model selection never see the test set.
Adding a protocol = one function + one class here + one config in `conf/protocol/`.

Which classes are normal: every protocol takes `normal` (the normal classes) or its complement
`anomalous` (the anomalous classes; every other class is normal, ADAE's "one class is the
anomaly" setting). They are mutually exclusive: giving both is an error. The configs leave both
null and each protocol has a default for that case (`Protocol.default_normal` /
`default_anomalous`: class 0 normal, or for `holdout_class` class 0 anomalous), so that
`protocol.anomalous=[3]` works without also having to clear `protocol.normal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

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
                    dataset: str = "dataset", key: str = "protocol.normal") -> list[int]:
    """Turn `protocol.normal` (class ids or class names) into a sorted list of class ids.

    `key` names the setting in error messages: "protocol.anomalous" resolves that list the same
    way (then "covers every class" means nothing would be left to be normal).

    An integer is a class id (position 0…n−1), except where every class name is a number
    (COIL-100's objects "1"…"100", a folder of numbered classes): there an integer is read as
    the class name, so `protocol.normal=[1,3,77]` means objects 1, 3 and 77, as the user wrote
    them. Where names are "0"…"n−1" (MNIST), both readings agree."""
    role = key.rsplit(".", 1)[-1]
    if normal is None or (isinstance(normal, (list, tuple)) and len(normal) == 0):
        raise AnomalyError(f"{key} is empty: give at least one {role} class, e.g. {key}=[0]")
    if isinstance(normal, (int, str)):
        normal = [normal]
    n = len(class_names)
    numeric_names = all(str(c).isdigit() for c in class_names)
    ids = []
    for value in normal:
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if isinstance(value, str) and value in class_names:
            ids.append(class_names.index(value))
        elif is_int and numeric_names and str(int(value)) in class_names:
            ids.append(class_names.index(str(int(value))))
        elif is_int and not numeric_names and 0 <= value < n:
            ids.append(int(value))
        else:
            shown = ", ".join(class_names) if n <= 26 else f"{class_names[0]} … {class_names[-1]}"
            allowed = (f"ids 0…{n - 1} or names [{shown}]"
                       if not numeric_names or list(class_names) == [str(c) for c in range(n)]
                       else f"the numbers [{shown}] (its class names)")
            raise AnomalyError(f"{key}: unknown class {value!r} for dataset {dataset}; "
                               f"classes are {allowed}")
    if len(set(ids)) != len(ids):
        raise AnomalyError(f"{key}={list(normal)} names a class twice")
    if len(ids) == n:
        other = "anomalous" if role == "normal" else "normal"
        raise AnomalyError(f"{key}={list(normal)} covers every class of {dataset}: "
                           f"nothing is left to be {other}")
    return sorted(ids)


def check_exclusive(normal: object, anomalous: object) -> None:
    """`protocol.normal` and `protocol.anomalous` are two ways to say the same thing: one at most."""
    if normal is not None and anomalous is not None:
        raise AnomalyError(f"protocol.normal={normal} and protocol.anomalous={anomalous} are mutually "
                           "exclusive: give one of them and set the other to null")


def resolve_normal_classes(normal: Sequence[int | str] | int | str | None,
                           anomalous: Sequence[int | str] | int | str | None,
                           class_names: Sequence[str], dataset: str = "dataset") -> list[int]:
    """The normal class ids from `protocol.normal`, or as the complement of `protocol.anomalous`
    (exactly one of them given)."""
    check_exclusive(normal, anomalous)
    if anomalous is not None:
        anomalous_ids = resolve_classes(anomalous, class_names, dataset, key="protocol.anomalous")
        return [c for c in range(len(class_names)) if c not in anomalous_ids]
    return resolve_classes(normal, class_names, dataset)


def _check_fraction(name: str, value: float) -> float:
    if not (0.0 < float(value) < 1.0):
        raise AnomalyError(f"{name}={value} must be in (0, 1)")
    return float(value)


def _check_share(name: str, value: float) -> float:
    """A fraction that may be 0 (nothing taken) but not 1."""
    if not (0.0 <= float(value) < 1.0):
        raise AnomalyError(f"{name}={value} must be in [0, 1)")
    return float(value)


def one_class_split(labels: np.ndarray, official_test: np.ndarray, normal: list[int],
                    val_fraction: float = 0.1, val_anomalies: bool = True, seed: int = 0,
                    n_train: int | None = None) -> Split:
    """Train on the normal classes' official-train images; test on the whole official test split.

    (ARAE's "p2", Deep SVDD's protocol.) Validation: `val_fraction` of the official train split,
    drawn per class so it has the test split's class mix (with anomalies, for an F1 threshold);
    with `val_anomalies=False` only normal images are held out (quantile threshold).
    `n_train`: train on that many of the normal training images (a seeded subset drawn after
    validation, for learning curves over the training-set size); None: all of them.
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
    if n_train is not None:
        if n_train > len(train):
            raise AnomalyError(f"protocol.n_train={n_train} but the normal classes have only "
                               f"{len(train)} training images")
        train = np.sort(rng.permutation(train)[:n_train])
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
    # test anomalies from the front of one seeded permutation, validation's from its back: disjoint,
    # and a smaller share's anomalies are a subset of a larger one's (scored once across shares)
    test = np.sort(np.concatenate([test_n, others[:n_test_anom]]))
    val = np.sort(np.concatenate([val_n, others[len(others) - n_val_anom:]]))
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
        # a prefix of one seeded permutation: each share's outliers are a uniform draw, and a
        # smaller share's are a subset of a larger one's (the five shares of a fold are then
        # scored once: anomaly.reproduce caches scores by image)
        return np.sort(np.concatenate([inliers, rng.permutation(outliers)[:n_out]]))

    test = with_outliers(fold)
    val = with_outliers(val_fold)
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


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
    train_fraction = _check_fraction("protocol.train_fraction", train_fraction)
    val_fraction = _check_fraction("protocol.val_fraction", val_fraction)
    val_anomaly_fraction = _check_share("protocol.val_anomaly_fraction", val_anomaly_fraction)
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


def _class_list(value: Sequence[int | str] | int | str | None) -> list | int | str | None:
    return list(value) if isinstance(value, (list, tuple)) else value


class Protocol:
    """Base for protocol configs: `split(data)` resolves class names and calls the function.

    `normal` (the normal classes) or `anomalous` (the anomalous classes, every other class is
    normal): give at most one. With neither, the protocol's default applies: `default_normal`
    (class 0) or, where that is None, `default_anomalous`.

    The threshold each protocol's paper used is named in its config (conf/protocol/<name>.yaml,
    `override /threshold…`), not here.
    """

    name = "protocol"
    default_normal: ClassVar[list[int] | None] = [0]
    default_anomalous: ClassVar[list[int] | None] = None

    def __init__(self, normal: Sequence[int | str] | None = None, seed: int = 0,
                 anomalous: Sequence[int | str] | None = None) -> None:
        normal, anomalous = _class_list(normal), _class_list(anomalous)
        check_exclusive(normal, anomalous)  # fail at config time, before any data loads
        if normal is None and anomalous is None:
            normal, anomalous = _class_list(self.default_normal), _class_list(self.default_anomalous)
        self.normal = normal
        self.anomalous = anomalous
        self.seed = int(seed)

    def split(self, data: ImageSet) -> Split:
        normal = resolve_normal_classes(self.normal, self.anomalous, data.class_names, data.name)
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
                 seed: int = 0, anomalous=None, n_train: int | None = None) -> None:
        super().__init__(normal, seed, anomalous)
        self.val_fraction = float(_check_fraction("protocol.val_fraction", val_fraction))
        self.val_anomalies = bool(val_anomalies)
        if n_train is not None and (isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1):
            raise AnomalyError(f"protocol.n_train={n_train} must be a positive integer, or null for every "
                               "training image")
        self.n_train = None if n_train is None else int(n_train)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        if data.official_test is None:
            raise AnomalyError(f"protocol one_class needs an official test split and dataset "
                               f"{data.name} has none; use protocol=anomaly_ratio")
        return one_class_split(data.labels.numpy(), data.official_test.numpy(), normal,
                               self.val_fraction, self.val_anomalies, self.seed, self.n_train)


class AnomalyRatio(Protocol):
    name = "anomaly_ratio"

    def __init__(self, normal=None, anomaly_ratio: float = 0.1, train_fraction: float = 0.6,
                 val_fraction: float = 0.2, seed: int = 0, anomalous=None) -> None:
        super().__init__(normal, seed, anomalous)
        self.anomaly_ratio = _check_fraction("protocol.anomaly_ratio", anomaly_ratio)
        self.train_fraction = float(train_fraction)
        self.val_fraction = float(val_fraction)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return anomaly_ratio_split(data.labels.numpy(), normal, self.anomaly_ratio,
                                   self.train_fraction, self.val_fraction, self.seed)


class GPNDFolds(Protocol):
    name = "gpnd_folds"

    def __init__(self, normal=None, fold: int = 0, outlier_ratio: float = 0.5, n_folds: int = 5,
                 fold_seed: int = 0, seed: int = 0, anomalous=None) -> None:
        super().__init__(normal, seed, anomalous)
        self.n_folds = int(n_folds)
        if not 0 <= int(fold) < self.n_folds:
            raise AnomalyError(f"protocol.fold={fold} must be one of 0…{self.n_folds - 1}")
        self.fold = int(fold)
        self.outlier_ratio = _check_fraction("protocol.outlier_ratio", outlier_ratio)
        self.fold_seed = int(fold_seed)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return gpnd_folds_split(data.labels.numpy(), normal, self.fold, self.outlier_ratio,
                                self.n_folds, self.fold_seed, self.seed)


class HoldoutClass(Protocol):
    """ADAE's protocol: one class is the anomaly, the others are normal (see holdout_class_split)."""

    name = "holdout_class"
    default_normal = None
    default_anomalous = [0]

    def __init__(self, normal=None, anomalous=None, train_fraction: float = 0.8,
                 val_fraction: float = 0.1, val_anomaly_fraction: float = 0.1, seed: int = 0) -> None:
        super().__init__(normal, seed, anomalous)
        self.train_fraction = _check_fraction("protocol.train_fraction", train_fraction)
        self.val_fraction = _check_fraction("protocol.val_fraction", val_fraction)
        self.val_anomaly_fraction = _check_share("protocol.val_anomaly_fraction", val_anomaly_fraction)

    def _split(self, data: ImageSet, normal: list[int]) -> Split:
        return holdout_class_split(data.labels.numpy(), normal, self.train_fraction, self.val_fraction,
                                   self.val_anomaly_fraction, self.seed)


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
    c = _check_fraction("protocol.contamination", contamination)
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
    val_count = int(round(_check_fraction("protocol.val_fraction", val_fraction) * len(pool))) \
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
        self.contamination = _check_fraction("protocol.contamination", contamination)
        self.val_fraction = _check_fraction("protocol.val_fraction", val_fraction)
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


# ---- coil_random: GPND / ARAE's COIL-100 protocol ------------------------------------------------
# GPND's outlier share of the test set for 1, 4 and 7 normal objects (ARAE uses the same)
COIL_OUTLIER_RATIOS = {1: 0.5, 4: 0.25, 7: 0.15}


def coil_outlier_ratio(n_normal: int, points: dict | None = None) -> float:
    """The outlier share for `n_normal` objects: the papers' share where they give one (1 / 4 / 7
    objects: 50 / 25 / 15 %), linear in the number of objects between those points, and the
    nearest end's share outside them (a single object: 50 %; more than 7: 15 %). So 3 objects get
    1/3 and the published ARAE README's 4-object example its 25 %."""
    table = sorted((int(k), float(v)) for k, v in (points or COIL_OUTLIER_RATIOS).items())
    if not table:
        raise AnomalyError("protocol.paper_outlier_ratios is empty: give {objects: share, …}")
    n = int(n_normal)
    exact = dict(table)
    if n in exact:
        return exact[n]
    if n <= table[0][0]:
        return table[0][1]
    for (n0, p0), (n1, p1) in zip(table, table[1:]):
        if n <= n1:
            return p0 + (p1 - p0) * (n - n0) / (n1 - n0)
    return table[-1][1]


def _half_up(x: float) -> int:
    """Round half up (Python's round() rounds half to even: 0.5 → 0, 2.5 → 2)."""
    return int(np.floor(x + 0.5))


def _one_per_object(pools: dict[int, list[int]], order: list[int], count: int) -> list[int]:
    """`count` images taken round-robin over the objects in `order`: one image of each object
    first, a second one only once every object has given one (and so on). Taken images are
    removed from `pools`."""
    taken: list[int] = []
    while len(taken) < count:
        progressed = False
        for obj in order:
            if len(taken) == count:
                break
            if pools[obj]:
                taken.append(pools[obj].pop())
                progressed = True
        if not progressed:  # the caller checked the total; this would be a bug
            raise AnomalyError(f"coil_random: ran out of outlier images after {len(taken)} of {count}")
    return taken


def coil_random_split(labels: np.ndarray, normal: list[int], outlier_ratio: float,
                      test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 0,
                      class_names: Sequence[str] | None = None) -> Split:
    """GPND / ARAE's COIL-100 protocol on the normal objects `normal` (one class per object).

    Per normal object: `test_fraction` (20 %) of its images are tested, the rest (80 %) is the
    training side; `val_fraction` of the training side is held out for validation (so the
    threshold comes from the training side, never from test: the published ARAE code tuned it on
    the test set). Outliers from the other objects make `outlier_ratio` of the test set
    (round(n·p/(1−p)) for n test normals), at most one image per object where there are enough
    objects (GPND: "at most one from each category"; round-robin otherwise). Validation gets
    outliers at the same ratio, from objects the test does not use first; no image is in two
    splits. The split checks its own arithmetic: each ratio is met to within one image.
    """
    p = _check_fraction("protocol.outlier_ratio", outlier_ratio)
    test_fraction = _check_fraction("protocol.test_fraction", test_fraction)
    val_fraction = _check_fraction("protocol.val_fraction", val_fraction)
    name = (lambda k: repr(class_names[k])) if class_names is not None else (lambda k: str(k))
    rng = np.random.default_rng(seed)
    is_normal = np.isin(labels, normal)

    def counts(n: int) -> tuple[int, int, int]:
        n_test = _half_up(test_fraction * n)
        n_val = _half_up(val_fraction * (n - n_test))
        return n - n_test - n_val, n_val, n_test

    train, val_n, test_n = [], [], []
    for c in normal:
        idx = np.flatnonzero(labels == c)
        n_train, n_val, n_test = counts(len(idx))
        if min(n_train, n_val, n_test) < 1:
            need = next(n for n in range(1, 10_000) if min(counts(n)) >= 1)
            empty = [part for part, k in zip(("train", "validation", "test"), (n_train, n_val, n_test))
                     if k < 1]
            raise AnomalyError(f"protocol coil_random: normal class {name(c)} has only {len(idx)} images: "
                               f"protocol.test_fraction={test_fraction} and protocol.val_fraction="
                               f"{val_fraction} leave it no {' and no '.join(empty)} image "
                               f"(needs at least {need} images)")
        idx = idx[rng.permutation(len(idx))]
        test_n.append(idx[:n_test])
        val_n.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    train, val_n, test_n = (np.concatenate(part) for part in (train, val_n, test_n))

    others = [int(k) for k in rng.permutation(np.unique(labels[~is_normal]))]
    n_out_test = _half_up(len(test_n) * p / (1 - p))
    n_out_val = _half_up(len(val_n) * p / (1 - p))
    available = int((~is_normal).sum())
    if n_out_test + n_out_val > available:
        raise AnomalyError(f"protocol.outlier_ratio={p} needs {n_out_test} test + {n_out_val} validation "
                           f"outliers but the other classes have only {available} images: lower "
                           "protocol.outlier_ratio or use fewer normal objects")
    pools = {k: list(np.flatnonzero(labels == k)[rng.permutation(int((labels == k).sum()))]) for k in others}
    test_out = _one_per_object(pools, others, n_out_test)
    used = set(labels[test_out].tolist())
    val_out = _one_per_object(pools, [k for k in others if k not in used] + [k for k in others if k in used],
                              n_out_val)

    test = np.sort(np.concatenate([test_n, np.asarray(test_out, np.int64)]))
    val = np.sort(np.concatenate([val_n, np.asarray(val_out, np.int64)]))
    train = np.sort(train)
    # own arithmetic: ratios within one image, one image per object where possible, disjoint
    for part, n_in, n_out in (("test", len(test_n), len(test_out)), ("validation", len(val_n), len(val_out))):
        if abs(n_out - p * (n_in + n_out)) > 1:
            raise AnomalyError(f"coil_random: {part} has {n_out} outliers of {n_in + n_out} images, not "
                               f"{p:.0%} within one image (a bug)")
    if len(others) >= n_out_test and len(used) != n_out_test:
        raise AnomalyError("coil_random: the test took two images of one outlier object (a bug)")
    if len(np.unique(np.concatenate([train, val, test]))) != len(train) + len(val) + len(test):
        raise AnomalyError("coil_random: an image is in two splits (a bug)")
    return Split(train=train, val=val, test=test,
                 train_anomalous=~is_normal[train], val_anomalous=~is_normal[val],
                 test_anomalous=~is_normal[test], normal_classes=list(normal))


class CoilRandom(Protocol):
    """GPND / ARAE's COIL-100 protocol (see coil_random_split): `n_normal` objects drawn at random
    (`draw` seeds the draw and the split: one draw = one of the papers' 30 repetitions) or listed
    in `normal`; outliers at `outlier_ratio` (null: the papers' 50 / 25 / 15 % for 1 / 4 / 7
    objects, linear between them for other counts: see coil_outlier_ratio). Works on any dataset (classes = objects). `anomalous` is not offered: the outliers
    are always every other class."""

    name = "coil_random"
    default_normal = None  # no normal class given: draw them

    def __init__(self, normal=None, n_normal: int | None = None, draw: int = 0,
                 outlier_ratio: float | None = None, test_fraction: float = 0.2,
                 val_fraction: float = 0.2, paper_outlier_ratios: dict | None = None) -> None:
        super().__init__(normal, seed=draw)
        if n_normal is not None and (isinstance(n_normal, bool) or int(n_normal) != n_normal or n_normal < 1):
            raise AnomalyError(f"protocol.n_normal={n_normal} must be a positive integer "
                               "(the papers: 1, 4 or 7)")
        if self.normal is not None:
            listed = len(self.normal) if isinstance(self.normal, list) else 1
            if n_normal is not None and int(n_normal) != listed:
                raise AnomalyError(f"protocol.n_normal={n_normal} but protocol.normal={self.normal} lists "
                                   f"{listed}: give one of them (or make them agree)")
            n_normal = listed
        self.n_normal = 1 if n_normal is None else int(n_normal)
        self.draw = int(draw)
        if outlier_ratio is None:  # the papers' share, interpolated between their points
            outlier_ratio = coil_outlier_ratio(self.n_normal, paper_outlier_ratios)
        self.outlier_ratio = _check_fraction("protocol.outlier_ratio", outlier_ratio)
        self.test_fraction = _check_fraction("protocol.test_fraction", test_fraction)
        self.val_fraction = _check_fraction("protocol.val_fraction", val_fraction)

    def normal_classes(self, data: ImageSet) -> list[int]:
        """The listed classes, or `n_normal` classes drawn with `draw` (from those with images)."""
        if self.normal is not None:
            return resolve_classes(self.normal, data.class_names, data.name)
        present = np.unique(data.labels.numpy())
        if self.n_normal >= len(present):
            raise AnomalyError(f"protocol.n_normal={self.n_normal} but dataset {data.name} has only "
                               f"{len(present)} classes: nothing would be left to be an outlier")
        draw_rng = np.random.default_rng(np.random.SeedSequence(self.draw).spawn(1)[0])
        return sorted(int(c) for c in draw_rng.choice(present, self.n_normal, replace=False))

    def split(self, data: ImageSet) -> Split:
        normal = self.normal_classes(data)
        split = coil_random_split(data.labels.numpy(), normal, self.outlier_ratio, self.test_fraction,
                                  self.val_fraction, self.draw, data.class_names)
        for part in ("train", "val", "test"):
            if len(getattr(split, part)) == 0:
                raise AnomalyError(f"protocol {self.name} on {data.name} with normal={normal} "
                                   f"left the {part} split empty")
        return split

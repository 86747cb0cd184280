"""coil_random: GPND / ARAE's COIL-100 protocol, normal objects listed or drawn at random, outliers
at most one image per other object.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet
from anomaly.data.protocols.base import Protocol, Split, check_fraction, resolve_classes


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
    p = check_fraction("protocol.outlier_ratio", outlier_ratio)
    test_fraction = check_fraction("protocol.test_fraction", test_fraction)
    val_fraction = check_fraction("protocol.val_fraction", val_fraction)
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
        self.outlier_ratio = check_fraction("protocol.outlier_ratio", outlier_ratio)
        self.test_fraction = check_fraction("protocol.test_fraction", test_fraction)
        self.val_fraction = check_fraction("protocol.val_fraction", val_fraction)

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


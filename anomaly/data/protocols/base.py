"""What every protocol shares: the `Split` it returns, the `Protocol` base class, class-name
resolution and the checks of its settings.

Which classes are normal: every protocol takes `normal` (the normal classes) or its complement
`anomalous` (the anomalous classes; every other class is normal, ADAE's "one class is the
anomaly" setting). They are mutually exclusive: giving both is an error. The configs leave both
null and each protocol has a default for that case (`Protocol.default_normal` /
`default_anomalous`: class 0 normal, or for `holdout_class` class 0 anomalous), so that
`protocol.anomalous=[3]` works without also having to clear `protocol.normal`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from anomaly import AnomalyError
from anomaly.data.image_set import ImageSet


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

    def train_hash(self) -> str:
        """What identifies the training set: its dataset indices, in order (runs with one hash
        trained on the same images; anomaly.reproduce shares a model only between such cells)."""
        return hashlib.sha256(np.asarray(self.train, dtype=np.int64).tobytes()).hexdigest()[:16]

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


def check_fraction(name: str, value: float) -> float:
    if not (0.0 < float(value) < 1.0):
        raise AnomalyError(f"{name}={value} must be in (0, 1)")
    return float(value)


def check_share(name: str, value: float) -> float:
    """A fraction that may be 0 (nothing taken) but not 1."""
    if not (0.0 <= float(value) < 1.0):
        raise AnomalyError(f"{name}={value} must be in [0, 1)")
    return float(value)


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


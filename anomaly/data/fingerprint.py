"""What a run's data were, by content: a digest of every image as its loader decoded it (before
any resizing, which the config already records), and per split a fingerprint of the images,
labels and anomaly flags it drew, in order.

Two runs with equal fingerprints saw the same pixels in the same order, wherever the files lay:
a machine holding the full 60,000-image MNIST gets other fingerprints than one holding the
first 10,000, though the paths and the config match.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anomaly.data.image_set import ImageSet
    from anomaly.data.protocols.base import Split

PARTS = ("train", "val", "test")


def image_digests(images) -> np.ndarray:
    """One 64-bit content digest per image (uint8 N×C×H×W; its shape is part of each digest)."""
    array = np.ascontiguousarray(images.numpy() if hasattr(images, "numpy") else images)
    shape = str(array.shape[1:]).encode()
    rows = array.reshape(len(array), -1)
    out = np.empty(len(array), dtype=np.uint64)
    for i, row in enumerate(rows):
        out[i] = int.from_bytes(hashlib.blake2b(row.data, digest_size=8, person=shape[:16]).digest(), "little")
    return out


def split_fingerprint(data: "ImageSet", split: "Split") -> dict[str, str]:
    """{train, val, test}: a digest of each split's images, labels and anomaly flags, in order."""
    digests = data.content_digests()
    labels = np.asarray(data.labels, dtype=np.int64)
    out = {}
    for part in PARTS:
        index = np.asarray(getattr(split, part), dtype=np.int64)
        flags = np.asarray(getattr(split, f"{part}_anomalous"), dtype=bool)
        h = hashlib.sha256()
        for block in (digests[index], labels[index], flags):
            h.update(np.ascontiguousarray(block).tobytes())
        out[part] = h.hexdigest()[:16]
    return out

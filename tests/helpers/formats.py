"""Small datasets in the real on-disk formats, as a user's files would look (no downloads)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims, raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def blob_images(labels: np.ndarray, size: int = 28, seed: int = 0) -> np.ndarray:
    """Easy synthetic classes: class k is a bright 8×8 patch at its own place (k-th cell of a
    3×4 grid, jittered ±1 px) on a faint noisy background. An autoencoder of one class cannot
    reconstruct patches elsewhere, so its reconstruction error separates the classes."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 30, size=(n, size, size)).astype(np.float64)
    row_step, col_step = (size - 10) // 2, (size - 10) // 3  # 9 and 6 px for 28×28
    for i, k in enumerate(labels):
        row, col = divmod(int(k), 4)
        y = 1 + row * row_step + rng.integers(-1, 2)
        x = 1 + col * col_step + rng.integers(-1, 2)
        images[i, y:y + 8, x:x + 8] = 200 + rng.integers(0, 55, size=(8, 8))
    return images.clip(0, 255).astype(np.uint8)


def write_mnist_like(root: Path, folder: str = "MNIST", n_train_per_class: int = 60,
                     n_test_per_class: int = 30, n_classes: int = 10, compress: bool = False,
                     seed: int = 0) -> Path:
    """torchvision's layout: root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    raw = Path(root) / folder / "raw"
    for train, per_class in ((True, n_train_per_class), (False, n_test_per_class)):
        labels = np.repeat(np.arange(n_classes), per_class)
        labels = np.random.default_rng(seed + train).permutation(labels).astype(np.uint8)
        images = blob_images(labels, seed=seed + 10 * train)
        img_file, lbl_file = MNIST_FILES[train]
        write_idx(raw / img_file, images, compress)
        write_idx(raw / lbl_file, labels, compress)
    return raw

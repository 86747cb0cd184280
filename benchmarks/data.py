"""Benchmark inputs: synthetic MNIST-like images written in MNIST's real on-disk format (IDX
files in torchvision's layout), so that the framework's own loader, the datamodule and
torchvision's dataset all read the same files. No download."""

from __future__ import annotations

import math
import struct
from functools import partial
from pathlib import Path

import numpy as np
import torch

from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.datasets import load_mnist
from anomaly.data.io import resize_images
from anomaly.data.protocols import OneClass

MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# protocol one_class with classes 0–8 normal (9 is the anomaly), 10 % of the train split to validation
NORMAL = list(range(9))
VAL_FRACTION = 0.1
TRAIN_SHARE = 0.9 * (1 - VAL_FRACTION)  # of the official train images that the protocol trains on


def blob_images(n: int, size: int = 28, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 size×size images and their labels: class k is a bright 8×8 patch in its own cell
    of a 3×4 grid (jittered ±1 px) on faint noise, roughly MNIST's ink / background statistics."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes).astype(np.uint8)
    images = rng.integers(0, 30, size=(n, size, size), dtype=np.uint8)
    row_step, col_step = (size - 10) // 2, (size - 10) // 3
    rows, cols = np.divmod(labels.astype(np.int64), 4)
    y = 1 + rows * row_step + rng.integers(-1, 2, n)
    x = 1 + cols * col_step + rng.integers(-1, 2, n)
    iy = y[:, None, None] + np.arange(8)[None, :, None]
    ix = x[:, None, None] + np.arange(8)[None, None, :]
    images[np.arange(n)[:, None, None], iy, ix] = rng.integers(200, 255, size=(n, 8, 8), dtype=np.uint8)
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())


def write_mnist_like(root: str | Path, n_train: int, n_test: int | None = None, seed: int = 0) -> Path:
    """root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with synthetic images."""
    raw = Path(root) / "MNIST" / "raw"
    n_test = max(n_test if n_test is not None else n_train // 6, 20)
    for train, n in ((True, n_train), (False, n_test)):
        images, labels = blob_images(n, seed=seed + int(train))
        write_idx(raw / MNIST_FILES[train][0], images)
        write_idx(raw / MNIST_FILES[train][1], labels)
    return Path(root)


def train_images_for(n_train_set: int) -> int:
    """Official train images to write so that the protocol's training set has ≈ n_train_set."""
    return max(int(math.ceil(n_train_set / TRAIN_SHARE)), 100)  # ≥ 10 per class: validation not empty


def datamodule(root: str | Path, image_size: int, batch_size: int, seed: int = 0) -> AnomalyDataModule:
    """The framework's datamodule on the synthetic MNIST files: the real loader (load_mnist),
    resized once, protocol one_class with digits 0–8 normal."""
    dm = AnomalyDataModule(dataset=partial(load_mnist, str(root), download=False),
                           protocol=OneClass(normal=NORMAL, val_fraction=VAL_FRACTION, seed=seed),
                           image_size=image_size, resize_mode="bilinear", batch_size=batch_size,
                           eval_batch_size=batch_size, num_workers=0, seed=seed)
    dm.prepare_data()
    dm.setup()
    return dm


def unit_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n synthetic images resized to size×size as the framework does, float in [0, 1]."""
    images, _ = blob_images(n, seed=seed)
    return resize_images(torch.from_numpy(images)[:, None], size).float() / 255.0

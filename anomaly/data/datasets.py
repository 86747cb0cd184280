"""Dataset loaders: each returns an `ImageSet` (all images decoded once into one uint8 tensor).

A loader knows where its files live and how to fetch them; it knows nothing about protocols.
Adding a dataset = one loader function here + one config in `conf/dataset/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from anomaly import AnomalyError


@dataclass
class ImageSet:
    """A whole dataset in memory.

    images: uint8 N×C×H×W; labels: int64 N (class ids, index into class_names);
    official_test: bool N marking the official test split, or None where the dataset has none.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    official_test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise AnomalyError(f"dataset {self.name}: images must be uint8 N×C×H×W, got "
                               f"{self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise AnomalyError(f"dataset {self.name}: {len(self.images)} images but "
                               f"{len(self.labels)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def fixed_stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int = 0) -> torch.Tensor:
    """A fixed train/test split for datasets without an official one (same on every machine)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return torch.from_numpy(test)


def load_digits(test_fraction: float = 0.3) -> ImageSet:
    """scikit-learn's 1,797 8×8 handwritten digits: real data shipped inside scikit-learn.

    There is no official split; a fixed stratified one (seed 0, 30 % test) stands in for it.
    Pixel values 0…16 are scaled to 0…255.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    return ImageSet(
        name="digits",
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=[str(c) for c in range(10)],
        official_test=fixed_stratified_test_mask(labels, test_fraction),
    )


def _load_torchvision_idx(cls: Callable, name: str, root: str | Path, download: bool,
                          class_names: list[str]) -> ImageSet:
    """Read an IDX-format torchvision dataset (MNIST family), train and test splits pooled.

    torchvision reads `root/<ClassName>/raw/*-ubyte` when present and otherwise downloads the
    official archives, checking their MD5 sums.
    """
    root = Path(root).expanduser()
    raw_dir = root / cls.__name__ / "raw"
    files = ", ".join(Path(url).name.removesuffix(".gz") for url, _ in cls.resources)
    where = (f"expected {files} in {raw_dir} (torchvision's layout); set paths.data_dir or "
             f"ANOMALY_DATA_DIR to the folder that holds {cls.__name__}/raw")
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except RuntimeError as err:
            if not download:
                raise AnomalyError(f"dataset {name}: files not found and download disabled; {where}") from None
            raise AnomalyError(f"dataset {name}: files not found and download failed "
                               f"({_last_line(err)}); {where}") from None
        except OSError as err:  # URLError, permission problems, unreadable files
            raise AnomalyError(f"dataset {name}: could not read or fetch files ({_last_line(err)}); "
                               f"{where}") from None
        parts.append((ds.data, ds.targets, train))
    images = torch.cat([p[0] for p in parts])[:, None].contiguous()
    labels = torch.cat([torch.as_tensor(p[1]) for p in parts])
    official_test = torch.cat([torch.full((len(p[0]),), not p[2]) for p in parts])
    return ImageSet(name=name, images=images, labels=labels, class_names=class_names,
                    official_test=official_test)


def _last_line(err: Exception) -> str:
    """The most specific line of a (possibly multi-line) error, for a one-line message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def load_mnist(root: str | Path, download: bool = True) -> ImageSet:
    """MNIST through torchvision (official train + test, pooled; `official_test` marks the test)."""
    from torchvision.datasets import MNIST

    return _load_torchvision_idx(MNIST, "mnist", root, download, [str(c) for c in range(10)])


def load_fashion_mnist(root: str | Path, download: bool = True) -> ImageSet:
    """Fashion-MNIST through torchvision; class names as torchvision spells them."""
    from torchvision.datasets import FashionMNIST

    return _load_torchvision_idx(FashionMNIST, "fashion_mnist", root, download,
                                 list(FashionMNIST.classes))


def resize_images(images: torch.Tensor, size: int | None, mode: str = "bilinear",
                  chunk: int = 8192) -> torch.Tensor:
    """Resize a uint8 N×C×H×W tensor once (in chunks), returning uint8 again.

    `mode` is any `torch.nn.functional.interpolate` mode ("bilinear" as GPND, "area" for
    downsampling as ARAE's INTER_AREA).
    """
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    kwargs = {} if mode in ("nearest", "area", "nearest-exact") else {"align_corners": False}
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].float()
        block = torch.nn.functional.interpolate(block, size=(size, size), mode=mode, **kwargs)
        out[start:start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out

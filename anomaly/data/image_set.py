"""What a dataset loader returns (`anomaly.data.datasets`): the whole dataset in memory, its
images decoded once into one uint8 tensor, with labels, class names and the official split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from anomaly import AnomalyError
from anomaly.provenance import subset_line


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
    # per-image content digests of the images as decoded (anomaly.data.fingerprint), kept from
    # before any resizing: computed on first use
    digests: np.ndarray | None = field(default=None, repr=False)
    # the official release's image counts ({"train": 60000, "test": 10000}; {"all": 7200} without
    # a split), where this copy may hold fewer: said where the numbers are set against papers
    official_size: dict[str, int] | None = None

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

    def size(self) -> dict:
        """{train, test, official}: the images here per official split (`all` without one) and the
        release's own counts (None where unknown)."""
        if self.official_test is None:
            here = {"all": len(self)}
        else:
            test = int(self.official_test.sum())
            here = {"train": len(self) - test, "test": test}
        return {**here, "official": dict(self.official_size) if self.official_size else None}

    def subset_line(self) -> str | None:
        """'10,000 of the official 60,000 training images' where this copy holds fewer images than
        the release (None where it is whole or the release's size is unknown)."""
        return subset_line(self.size())

    def content_digests(self) -> np.ndarray:
        if self.digests is None:
            from anomaly.data.fingerprint import image_digests

            self.digests = image_digests(self.images)
        return self.digests

"""The datamodule: dataset × protocol → batches.

Images stay one uint8 tensor in memory (decoded and resized once); a batch is a slice of it.
Conversion to float in the method's value range happens on the device, in the base module, so
loaders move 4× fewer bytes and no per-item PIL work runs in the training loop.

On a GPU (`images_on_device`, the default) that tensor is copied to the run's device once and
batches are sliced there: no host-to-device copy per batch (from pageable memory, each such copy
waits for the device). The batch order is still drawn on the host, once per epoch (the same
order as on a CPU, so CPU and GPU runs see the same batches), and copied with the epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from anomaly.data.image_set import ImageSet
from anomaly.data.io import resize_images
from anomaly.data.protocols.base import Protocol, Split


class IndexedImages(Dataset):
    """A view of some images of an ImageSet; fetches whole batches with one indexing op.

    Batches are dicts: image (uint8 B×C×H×W), anomalous (bool B), label (int64 B, class id) and
    index (int64 B, position in the ImageSet, used to de-duplicate DDP padding and in scores.npz).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray,
                 anomalous: np.ndarray) -> None:
        self.images = images
        self.labels = labels
        # where the images are (a GPU's memory, see the module docstring)
        self.indices = torch.as_tensor(indices, dtype=torch.long).to(images.device)
        self.anomalous = torch.as_tensor(anomalous, dtype=torch.bool).to(images.device)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: list[int] | np.ndarray) -> dict[str, torch.Tensor]:
        if isinstance(positions, torch.Tensor):  # from ArrayBatches on a device: already there
            pos = positions
        elif isinstance(positions, np.ndarray):  # from ArrayBatches: no per-int conversion
            pos = torch.from_numpy(positions).long()
        else:
            pos = torch.as_tensor(positions, dtype=torch.long)
        pos = pos.to(self.indices.device)  # DDP's sampler gives host lists
        # index_select: ~20× cheaper per batch than advanced indexing (measured, benchmarks #5)
        idx = self.indices.index_select(0, pos)
        return {"image": self.images.index_select(0, idx), "anomalous": self.anomalous.index_select(0, pos),
                "label": self.labels.index_select(0, idx), "index": idx}

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}


class EpochShuffle(RandomSampler):
    """Shuffles the training set anew each epoch, in an order fixed by (seed, epoch) alone.

    Lightning tells samplers the epoch (`set_epoch`), so a run resumed from an epoch-end checkpoint
    sees the same batches as the uninterrupted run (a generator drawn from epoch after epoch would
    start over). Under DDP Lightning swaps any RandomSampler for its DistributedSampler, which does
    the same per rank.
    """

    def __init__(self, data_source, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])  # independent streams per (seed, epoch)
        return rng.permutation(len(self.data_source))

    def __iter__(self):
        return iter(self.permutation().tolist())


class ArrayBatches(BatchSampler):
    """BatchSampler whose batches are slices of one index array instead of lists of ints.

    Building a 128-int list per batch and converting it back to a tensor cost about as much as
    fetching the batch itself (benchmarks #5). Other samplers (Lightning's DistributedSampler
    under DDP, which re-creates this class around it) fall back to BatchSampler's lists.
    `device`: the epoch's order is copied there once and batches are slices of that tensor.
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool, device: torch.device | None = None) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.device = device

    def __iter__(self):
        if isinstance(self.sampler, EpochShuffle):
            order = self.sampler.permutation()
        elif isinstance(self.sampler, SequentialSampler):
            order = np.arange(len(self.sampler), dtype=np.int64)
        else:
            yield from super().__iter__()
            return
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        if self.device is not None:
            order = torch.from_numpy(order).to(self.device)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]


class BatchLoader(DataLoader):
    """A DataLoader that, in the main process, yields `dataset.__getitems__(batch)` for each
    batch of its batch sampler directly. DataLoader's per-batch iterator machinery (profiler
    scope, fetcher, seed draw) cost about a third of fetching a 128-image batch (benchmarks
    #5). With workers or pinned memory it is the plain DataLoader; Lightning re-creates it as any
    DataLoader subclass (DDP samplers)."""

    def __iter__(self):
        if self.num_workers > 0 or self.pin_memory or not hasattr(self.dataset, "__getitems__"):
            return super().__iter__()
        return (self.collate_fn(self.dataset.__getitems__(batch)) for batch in self.batch_sampler)


def keep_batch(batch):
    """collate_fn: `__getitems__` already returns a collated batch."""
    return batch


class AnomalyDataModule(L.LightningDataModule):
    def __init__(self, dataset: Callable[[], ImageSet], protocol: Protocol,
                 image_size: int | None = None, resize_mode: str = "bilinear",
                 batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0,
                 drop_last: bool = False, seed: int = 0, split_path: str | Path | None = None,
                 images_on_device: bool = True) -> None:
        super().__init__()
        self.load_dataset = dataset
        self.protocol = protocol
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.seed = seed
        self.split_path = split_path
        self.images_on_device = bool(images_on_device)
        self._on_device: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None
        self.data: ImageSet | None = None
        self.split: Split | None = None

    def prepare_data(self) -> None:
        # Downloads (once per node) happen here; the decoded set is kept for setup().
        if self.data is None:
            self._load()

    def _load(self) -> None:
        data = self.load_dataset()
        data.content_digests()  # the data's fingerprint is of the images as decoded, not resized
        data.images = resize_images(data.images, self.image_size, self.resize_mode)
        self.data = data

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        if self.data is None:
            self._load()
        self.split = self.protocol.split(self.data)
        if self.split_path is not None:
            Path(self.split_path).parent.mkdir(parents=True, exist_ok=True)
            self.split.save(self.split_path)

    def fingerprint(self) -> dict[str, str]:
        """{train, val, test}: the content of the images each split drew (anomaly.data.fingerprint)."""
        from anomaly.data.fingerprint import split_fingerprint

        self.setup()
        return split_fingerprint(self.data, self.split)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self.setup()
        return self.data.image_shape

    def batch_device(self) -> torch.device | None:
        """Where batches are sliced: the run's accelerator when it is not the CPU and
        `images_on_device` (one process per device, workers off), else None (host memory)."""
        trainer = getattr(self, "trainer", None)
        if not self.images_on_device or trainer is None or self.num_workers > 0:
            return None
        device = trainer.strategy.root_device
        return device if device.type != "cpu" else None

    def subset(self, part: str, device: torch.device | None = None) -> IndexedImages:
        self.setup()
        images, labels = self.data.images, self.data.labels
        if device is not None:  # copied once per run and device, kept for every loader
            if self._on_device is None or self._on_device[0] != device:
                self._on_device = (device, images.to(device), labels.to(device))
            _, images, labels = self._on_device
        return IndexedImages(images, labels, getattr(self.split, part), getattr(self.split, f"{part}_anomalous"))

    def _loader(self, part: str, shuffle: bool, batch_size: int, drop_last: bool = False) -> DataLoader:
        device = self.batch_device()
        subset = self.subset(part, device)
        # Each loader iterator draws a base seed (for workers); from its own generator rather than
        # torch's global one, so that the training noise does not depend on when Lightning creates
        # iterators (it does so differently in a run resumed from a checkpoint).
        sampler = EpochShuffle(subset, self.seed) if shuffle else SequentialSampler(subset)
        return BatchLoader(subset, batch_sampler=ArrayBatches(sampler, batch_size, drop_last, device),
                          generator=torch.Generator().manual_seed(self.seed),
                          num_workers=self.num_workers, collate_fn=keep_batch,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size, self.drop_last)

    def train_eval_dataloader(self) -> DataLoader:
        """The training images in order, for fitting score statistics after training."""
        return self._loader("train", False, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

"""5. The data path: one epoch of training batches, as float images on the device.

- ours: the datamodule's loader (images decoded and resized once into one uint8 tensor, a batch
  is one indexing op) and the base module's batched scaling on the device
  (`on_after_batch_transfer`), the whole batch dict moved as Lightning moves it;
- baseline 1: slicing a preloaded float tensor (already scaled, already on the device) with the
  same batches' indices, the floor for any loader;
- baseline 2: torchvision's MNIST dataset (a PIL image per item, `Resize(32)` + `ToTensor()`,
  default collate) on the same files, the same batches.
"""

from __future__ import annotations

import torch

from anomaly.methods.ae import Autoencoder
from benchmarks.core import Case, Check, Goal
from benchmarks.data import datamodule, train_images_for, write_mnist_like


def our_epoch(dm, module, device, keep: bool = False):
    out = []
    for batch in dm.train_dataloader():
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch = module.on_after_batch_transfer(batch, 0)
        if keep:
            out.append(batch["image"])
    return out


def float_epoch(x_all: torch.Tensor, order: list[torch.Tensor], keep: bool = False):
    out = []
    for idx in order:
        x = x_all[idx]
        if keep:
            out.append(x)
    return out


def torchvision_epoch(loader, device, keep: bool = False):
    out = []
    for images, labels in loader:
        x = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if keep:
            out.append(x)
    return out


def same_batches(tolerance: float, what: str):
    def compare(a: list[torch.Tensor], b: list[torch.Tensor]) -> Check:
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
            return Check(False, f"{what}: different batches")
        diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))
        equal = sum(int((x.float() - y.float()).abs().le(1e-7).sum()) for x, y in zip(a, b))
        total = sum(x.numel() for x in a)
        text = f"{what}: max pixel diff {diff * 255:.2g}/255, {equal / total:.1%} of pixels equal"
        return Check(diff <= tolerance, text)
    return compare


def cases(size, device, workdir) -> list[Case]:
    from torchvision import datasets, transforms
    from torch.utils.data import DataLoader

    root = write_mnist_like(workdir / "datapath", n_train=train_images_for(size.data_images))
    dm = datamodule(root, 32, size.data_batch)
    module = Autoencoder([1, 32, 32]).to(device)
    order = [b["index"] for b in dm.train_dataloader()]
    x_all = dm.data.images.to(device).float() / 255.0  # scaled where, and as, the module scales
    order_device = [idx.to(device) for idx in order]
    n_images = sum(len(i) for i in order)
    mnist = datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose([
        transforms.Resize(32, interpolation=transforms.InterpolationMode.BILINEAR), transforms.ToTensor()]))
    # pooled index = train index for the official train images (they come first)
    tv_loader = DataLoader(mnist, batch_sampler=[idx.tolist() for idx in order], num_workers=0)
    what = f"one epoch of {n_images:,} training images as float batches of {size.data_batch}, 32×32"
    return [
        Case(bench="5", what=what, baseline_label="slicing a preloaded float tensor",
             ours_label="datamodule (uint8 slices, scaled on the device)",
             baseline=lambda: float_epoch(x_all, order_device),
             ours=lambda: our_epoch(dm, module, device),
             check_baseline=lambda: float_epoch(x_all, order_device, keep=True),
             check_ours=lambda: our_epoch(dm, module, device, keep=True),
             compare=same_batches(0.0, "same batches"), goal=Goal("overhead", 1.2), items=n_images,
             repeats=size.at_least(21)),  # millisecond epochs: a median of 3 is noise
        Case(bench="5", what=what, baseline_label="torchvision MNIST (PIL per item, Resize + ToTensor)",
             ours_label="datamodule",
             baseline=lambda: torchvision_epoch(tv_loader, device),
             ours=lambda: our_epoch(dm, module, device),
             check_baseline=lambda: torchvision_epoch(tv_loader, device, keep=True),
             check_ours=lambda: our_epoch(dm, module, device, keep=True),
             compare=same_batches(1.5 / 255, "PIL vs torch bilinear resize"), goal=Goal("speedup"),
             items=n_images, once=True),
    ]

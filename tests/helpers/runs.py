"""What the end-to-end tests share: the AUROC floor, a tiny run on the synthetic MNIST files,
parameter snapshots of a method's networks."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from tests.conftest import TINY, compose_config

# The synthetic classes (tests/helpers/formats.py) differ by where their bright patch sits: a
# model that learned the normal class at all separates them almost perfectly, and chance is 0.5.
# 0.9 leaves room for the tiny training budgets while failing any model that did not learn.
AUROC_FLOOR = 0.9


def mnist_run(tmp_path: Path, mnist_root: Path, *overrides: str) -> DictConfig:
    """A tiny, quiet run on the generated MNIST files (conftest's `mnist_root`) at 16×16, writing
    to tmp_path; `overrides` after these."""
    return compose_config(tmp_path, [*TINY, "dataset=mnist", f"paths.data_dir={mnist_root}",
                                     "dataset.loader.download=false", "dataset.image_size=16", *overrides])


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's parameters, by name."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed_networks(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """The direct children whose parameters differ from the snapshot `before`."""
    return {name.split(".")[0] for name, p in module.named_parameters() if not torch.equal(before[name], p)}

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from anomaly.config import compose

from tests.helpers.formats import (write_brain_mri, write_coil100, write_emnist_letters, write_head_ct,
                                   write_mnist_like)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# a tiny, quiet, fast run
TINY = ["print_config=false", "trainer.enable_progress_bar=false", "data.batch_size=32"]


def compose_config(output_dir: Path, overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """The real config, composed as `python -m anomaly.<config_name> overrides…` would, writing to
    output_dir."""
    return compose(output_dir, overrides, config_name)


def refusal(output_dir: Path, overrides: list[str]) -> str:
    """The one line the config check refuses these train overrides with (anomaly.config_schema)."""
    from anomaly.config_schema import ConfigError, check_train

    with pytest.raises(ConfigError) as refused:
        check_train(compose_config(output_dir, overrides))
    return str(refused.value)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are tiny: intra-op threads only add synchronisation, and two OpenMP
    threads on a 2-core machine shared with other work stall on each other (measured: an
    end-to-end run took 7–16 s with two threads vs 0.7 s with one). Subprocess runs are not
    affected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seeded_quiet():
    """torch seeded; Lightning's warning about self.log outside a Trainer silenced (tests that
    call a method's training_step directly)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        yield


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """Synthetic MNIST-format data (IDX files in torchvision's layout), 10 easy classes."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "MNIST", n_train_per_class=100, n_test_per_class=40)
    return root


@pytest.fixture(scope="session")
def every_dataset_root(tmp_path_factory) -> Path:
    """One data dir with every dataset a paper setup or table may name, in its real layout, tiny."""
    root = tmp_path_factory.mktemp("all_data")
    write_mnist_like(root, "MNIST", n_train_per_class=20, n_test_per_class=8)
    write_mnist_like(root, "FashionMNIST", n_train_per_class=20, n_test_per_class=8)
    write_emnist_letters(root, n_train_per_class=8, n_test_per_class=4)
    write_coil100(root, objects=range(1, 13), angles=range(0, 100, 5), size=32)
    write_head_ct(root)
    write_brain_mri(root)
    return root

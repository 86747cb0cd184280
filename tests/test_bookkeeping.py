"""The bookkeeping around the training steps (anomaly.callbacks, anomaly.rng): checkpoints and validation on a
cadence, validation that never changes the training, and each DDP rank's own noise."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from anomaly.rng import ResumableRNG, seed_rank_streams
from anomaly.checkpoints import load_checkpoint
from anomaly.pipeline import train
from tests.conftest import TINY, compose_config
from tests.helpers.runs import mnist_run

pytestmark = pytest.mark.slow


class CheckpointProbe(L.Callback):
    """Records, at the start of each epoch, the epoch that checkpoints/last.ckpt holds (None: none)."""

    seen: list = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        path = trainer.checkpoint_callback.dirpath + "/last.ckpt"
        try:
            CheckpointProbe.seen.append(load_checkpoint(path)["epoch"])
        except Exception:  # noqa: BLE001 - no file yet
            CheckpointProbe.seen.append(None)


@pytest.mark.parametrize("every_seconds, held", [(0, [None, 0, 1]), (3600, [None, None, None])])
def test_checkpoints_at_epoch_ends_on_their_cadence(tmp_path, every_seconds, held):
    CheckpointProbe.seen = []
    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=3", "logger=none",
                                    f"callbacks.model_checkpoint.every_seconds={every_seconds}",
                                    "+callbacks.probe._target_=tests.test_bookkeeping.CheckpointProbe"])
    results = train(cfg)
    assert CheckpointProbe.seen == held
    assert results["accelerator"] == "cpu" and results["world_size"] == 1  # where it trained
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 3  # the run's final one, after fit


def validated_epochs(tmp_path) -> list[int]:
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh) if row.get("val/auroc")]


def test_validation_every_k_epochs_of_at_least_n_batches(tmp_path):
    # digits: 4 training batches an epoch; at least 8 batches between validations: every 2nd epoch
    # (then the stand-alone validation after fit, logged as epoch 6)
    cfg = compose_config(tmp_path / "a", [*TINY, "trainer.max_epochs=6", "callbacks.validation_cadence.every_n_batches=8"])
    train(cfg)
    assert validated_epochs(tmp_path / "a") == [1, 3, 5, 6]
    cfg = compose_config(tmp_path / "b", [*TINY, "trainer.max_epochs=3", "callbacks.validation_cadence.every_n_batches=1"])
    train(cfg)
    assert validated_epochs(tmp_path / "b") == [0, 1, 2, 3]


def test_validation_never_changes_the_training(tmp_path, mnist_root):
    # the VAE's scores sample codes from torch's generator; validating every epoch or never, the
    # training draws the same numbers and ends with the same model
    common = ["method=vae", "method.score_samples=2", "trainer.max_epochs=3", "logger=none"]
    every = train(mnist_run(tmp_path / "every", mnist_root, *common, "callbacks.validation_cadence.every_n_batches=1"))
    never = train(mnist_run(tmp_path / "never", mnist_root, *common,
                            "callbacks.validation_cadence.every_n_batches=100000"))
    assert every["metrics"] == never["metrics"]
    a = load_checkpoint(tmp_path / "every" / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "never" / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("world_size", [1, 2])
def test_each_rank_draws_its_own_noise_reproducibly(world_size):
    def draws(rank: int, epoch: int = 3) -> torch.Tensor:
        torch.manual_seed(123)  # what seed_everything left, the same on every rank
        trainer = SimpleNamespace(world_size=world_size, global_rank=rank, current_epoch=epoch)
        ResumableRNG(seed=7).on_train_epoch_start(trainer, SimpleNamespace(run_config={}))
        return torch.rand(4)

    if world_size == 1:  # one process keeps its one stream
        ours = draws(0)
        torch.manual_seed(123)
        assert torch.equal(ours, torch.rand(4))
        return
    assert not torch.equal(draws(0), draws(1))  # GAN latents, PGD starts, VAE noise apart per rank
    assert torch.equal(draws(1), draws(1))  # a function of (seed, epoch, rank): resumes exactly
    assert not torch.equal(draws(1, epoch=3), draws(1, epoch=4))
    seed_rank_streams(7, 3, 1)
    assert torch.equal(torch.rand(4), draws(1))


def test_versions_name_what_the_process_imported_and_read_the_installed_set_once(monkeypatch):
    """results.json's `versions`: the installed distributions are read once per process (slow:
    every distribution's RECORD), while which of them count is read from what is imported at each
    call: a module imported later still shows up."""
    import sys

    import yaml  # noqa: F401 - PyYAML, imported by Hydra anyway

    from anomaly import results

    found = results.versions()
    assert found["torch"] == torch.__version__ and "lightning" in found and "numpy" in found
    assert found["PyYAML"] == yaml.__version__
    for module in [m for m in sys.modules if m.split(".")[0] in ("yaml", "_yaml")]:
        monkeypatch.delitem(sys.modules, module)  # PyYAML's modules, as if not imported
    assert "PyYAML" not in results.versions()
    monkeypatch.undo()
    assert results.versions() == found
    assert results._distributions_of_modules.cache_info().misses == 1

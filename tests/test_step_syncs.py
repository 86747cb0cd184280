"""No training step makes the device wait for the host (issue "training steps that cost what
they compute"): every method's steps, with the default callbacks, progress bar and logger, are
counted for host reads of device values (tests/helpers/syncs.py); the bookkeeping reads them
only at its cadence."""

from __future__ import annotations

import pytest
import torch

import anomaly.pipeline as pipeline
from tests.helpers.syncs import SyncCounter, count_step_syncs, host_reads_counted
from tests.test_method_contract import METHODS, run_config


def test_the_counter_counts_what_would_sync_on_a_gpu():
    x = torch.tensor([1.0, -2.0, 3.0])
    counter = SyncCounter()
    with counter, host_reads_counted(counter):
        x.sum().item()
        bool(x.max() > 0)
        _ = x[x > 0]
        x.nonzero()
        x.tolist()
        y = x * 2  # no sync: stays on the device
        torch.optim.Adam([torch.nn.Parameter(y.clone())]).step()  # step counts live on the host
    assert counter.counts == {"_local_scalar_dense": 2, "index[bool mask]": 1, "nonzero": 1, "tolist": 1}


def counted_training(monkeypatch, tmp_path, mnist_root, method: str, *overrides: str) -> list[dict]:
    """The method's tiny contract run (CSV logger and progress bar on, 4 batches an epoch), its
    syncs counted per training batch."""
    def build_trainer(*args, **kwargs):
        trainer = build(*args, **kwargs)
        counted.append(count_step_syncs(trainer))
        return trainer

    build, counted = pipeline.build_trainer, []
    monkeypatch.setattr(pipeline, "build_trainer", build_trainer)
    cfg = run_config(tmp_path, mnist_root, method, "logger=csv", "trainer.enable_progress_bar=true",
                     "+trainer.limit_train_batches=4", *overrides)
    pipeline.train(cfg)
    return counted[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_no_training_step_syncs(monkeypatch, tmp_path, mnist_root, method):
    # the logger's and the non-finite check's reads beyond these steps; the bar's numbers beyond the run
    steps = counted_training(monkeypatch, tmp_path, mnist_root, method, "trainer.log_every_n_steps=1000",
                             "callbacks.progress_bar.refresh_seconds=3600")
    assert len(steps) >= 2
    assert steps == [{}] * len(steps), f"method={method}: syncs per training step: {steps}"


@pytest.mark.slow
def test_bookkeeping_reads_values_only_at_its_cadence(monkeypatch, tmp_path, mnist_root):
    steps = counted_training(monkeypatch, tmp_path, mnist_root, "ae", "trainer.log_every_n_steps=3",
                             "callbacks.progress_bar.refresh_seconds=3600")
    # the logger (Lightning: global step 3, 6 …) and the non-finite check (every 3 batches) read on the
    # host at their cadence, every other step reads nothing
    reading = [i for i, counts in enumerate(steps) if counts]
    assert reading and all(i % 3 == 2 for i in reading), steps

"""Several processes: trainer=ddp_cpu (2 CPU processes, gloo) gives the one-process results, and
writes them once, into the one run dir.

The `ddp` tests start real process groups through the entry points (Lightning starts rank 1 by
running the command again, so they cannot run inside pytest's process); `-m "not ddp"` skips them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict, read_write

from anomaly import AnomalyError, distributed
from anomaly.rescore import evaluate
from tests.conftest import compose_config
from tests.helpers import cli



def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = cli.run(module, args, cwd=cwd, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_run_matches_one_process_and_writes_once(tmp_path):
    """ADAE (manual optimisation: two optimisers) trained under ddp_cpu as one job of a multirun.
    Rank 1 runs that job (not the sweep) in the job's dir and writes nothing there but its log;
    the threshold and test scores that the two ranks gathered equal one process re-scoring the
    checkpoint. Eval batches of 100: each rank scores several, and the odd test split (539
    images) makes DistributedSampler pad one rank with a repeat."""
    proc = run_cli("anomaly.train", "-m", "method=adae", "trainer=ddp_cpu", "trainer.max_epochs=1",
                   "+trainer.limit_train_batches=2", "data.eval_batch_size=100", "seed=1", "print_config=true",
                   "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path / 'out'}", cwd=tmp_path)
    # rank 1 shares rank 0's stdout: the config tree and the results table are printed once
    assert proc.stdout.count("anomaly.methods.adae.ADAE") == 1 and proc.stdout.count("run dir:") == 1
    results = sorted((tmp_path / "out").rglob("results.json"))
    assert len(results) == 1, results
    job = results[0].parent
    parts = job.relative_to(tmp_path / "out").parts  # multirun/adae/digits/<time>/0
    assert len(parts) == 5 and parts[0] == "multirun" and parts[-1] == "0"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["multirun"]  # no second run dir
    assert sorted(p.name for p in job.parent.iterdir()) == ["0", "multirun.yaml"]
    names = sorted(p.name for p in job.iterdir())
    assert names == [".hydra", "checkpoints", "config_tree.log", "csv", "examples.png", "results.json",
                     "roc.png", "score_hist.png", "scores.npz", "split.npz", "train.log", "train_rank1.log"]
    ddp = json.loads(results[0].read_text())
    assert ddp["status"] == "ok" and ddp["method"] == "adae" and ddp["seed"] == 1

    single = evaluate(compose_config(tmp_path / "single", [f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}",
                                                           "refit_threshold=true",
                                                           "trainer.enable_progress_bar=false"],
                                     config_name="evaluate"))
    assert ddp["metrics"] == pytest.approx(single["metrics"], abs=1e-6)  # the threshold included
    a, b = np.load(tmp_path / "single" / "scores.npz"), np.load(job / "scores.npz")
    for key in ("index", "anomalous", "labels"):
        assert np.array_equal(a[key], b[key]), key
    assert len(b["index"]) == 539 and len(np.unique(b["index"])) == 539  # the padding repeat dropped
    assert np.allclose(a["scores"], b["scores"], rtol=0, atol=1e-6)


# ---- the pieces, without processes -----------------------------------------------------------------

def _hydra_job(tmp_path, monkeypatch, overrides, hydra_overrides=()):
    """A composed Hydra job (as its own process would see it) run as `python -m anomaly.train`."""
    compose_config(tmp_path, [*overrides, *hydra_overrides])
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    with read_write(hc), open_dict(hc):
        hc.runtime.output_dir = str(tmp_path / "multirun" / "t" / "3")
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", types.SimpleNamespace(name="anomaly.train"))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "--config-name", "train", "seed=1,2", "method=adae"])


def test_rank_command_runs_this_job_in_its_dir(tmp_path, monkeypatch):
    _hydra_job(tmp_path, monkeypatch, ["method=adae", "seed=2"],
               ["hydra/launcher=basic", "hydra.mode=MULTIRUN", "hydra.job.chdir=false"])
    command, cwd = distributed.hydra_job_command(1)
    assert command[:3] == [sys.executable, "-m", "anomaly.train"]
    args = command[3:]
    assert "-m" not in args and "seed=1,2" not in args  # the job, not the sweep
    assert args[:2] == ["--config-name", "train"]
    assert "method=adae" in args and "seed=2" in args and "hydra.job.chdir=false" in args
    assert not any(a.startswith(("hydra/launcher", "hydra.mode")) for a in args)
    assert f'hydra.run.dir="{tmp_path / "multirun" / "t" / "3"}"' in args
    assert "hydra.output_subdir=null" in args and "hydra.job.name=app_rank1" in args
    assert cwd == str(Path.cwd())


def test_rank_command_refuses_an_unknown_entry_point(tmp_path, monkeypatch):
    _hydra_job(tmp_path, monkeypatch, [])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", types.SimpleNamespace(name="pytest"))
    with pytest.raises(AnomalyError, match="run python -m anomaly.train"):
        distributed.hydra_job_command(1)


@pytest.mark.slow
def test_release_restores_the_launch_environment(monkeypatch):
    """After a job whose ranks this process launched, the next job of a sweep must launch its own:
    Lightning takes a set LOCAL_RANK for 'started by a launcher' and would wait for ranks."""
    for key in distributed.LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    before = {k: os.environ.get(k) for k in distributed.LAUNCH_ENV}
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    launcher = types.SimpleNamespace(procs=[child])
    trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(launcher=launcher))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="12345", LOCAL_RANK="0", NODE_RANK="0",
                      WORLD_SIZE="2")
    distributed.release([trainer], before)
    assert child.returncode == 0
    assert {k: os.environ.get(k) for k in distributed.LAUNCH_ENV} == before


def test_manual_optimisation_gets_ddp_with_unused_parameters():
    manual, automatic = types.SimpleNamespace(automatic_optimization=False), types.SimpleNamespace()
    assert distributed.strategy_for("ddp", manual) == "ddp_find_unused_parameters_true"
    assert distributed.strategy_for("ddp", automatic) is None
    assert distributed.strategy_for(None, manual) is None  # one process: nothing to change

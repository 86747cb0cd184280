"""The cluster path without a cluster: a sweep through Hydra's submitit launcher (submitit's local
executor runs the jobs as hydra/launcher=slurm would, one pickled job per process) gives what
the basic launcher gives; a SLURM job that was pre-empted and requeued resumes from its last
epoch by itself; trainer=ddp over 2 nodes composes into what Lightning's SLURM environment and
sbatch need."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from anomaly import AnomalyError
from anomaly.checkpoints import load_checkpoint
from anomaly.pipeline import build_trainer, train
from anomaly.report import report
from anomaly.sweep import configure_job, hydra_job, sweep_status, threads_per_job, write_failure
from tests.conftest import CONF_DIR, TINY, compose_config
from tests.helpers import cli
from tests.test_cli import error_line, run
from tests.test_faults import kill_at

ROOT = Path(__file__).resolve().parents[1]


# ---- a sweep through submitit ----------------------------------------------------------------------
@pytest.mark.slow
def test_submitit_sweep_with_a_failing_job(tmp_path):
    sweep = tmp_path / "sweep"
    common = ["trainer.max_epochs=1", "threads=1", "logger=none"]
    proc = run("anomaly.train", "-m", "hydra/launcher=submitit_local", "protocol.normal=0,99", *common,
               f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    # as with the basic launcher (tests/test_sweep.py): the failing job does not stop the other,
    # and the summary (in this process, after the jobs' processes ended) counts both
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr  # the plugin ran the jobs
    assert f"sweep {sweep}: 2 jobs: 1 failed, 1 ok (failed: jobs 1)" in proc.stderr
    assert f"report: python -m anomaly.report {sweep}" in proc.stdout
    assert "is validated against ConfigStore schema" not in proc.stderr
    assert sweep_status(sweep) == {"ok": ["0"], "failed": ["1"]}  # submitit's folder is no job

    ok, failed = (json.loads((sweep / job / "results.json").read_text()) for job in ("0", "1"))
    reference = train(compose_config(tmp_path / "reference", [*TINY, *common, "protocol.normal=0"]))
    assert ok["status"] == "ok" and ok["metrics"] == reference["metrics"]  # exactly
    assert ok["run_dir"] == str(sweep / "0") and ok["protocol"]["normal"] == ["0"]
    assert ok["command"].startswith("python -m anomaly.train protocol.normal=0 ")  # the job's, not submitit's
    assert failed["status"] == "failed" and failed["metrics"] == {}
    assert failed["problem"].startswith("AnomalyError: protocol.normal: unknown class 99 for dataset digits")
    assert failed["command"].startswith("python -m anomaly.train protocol.normal=99 ")
    # the job's one error line, in its submitit log (jobs print there, not to the sweep's terminal)
    logs = sorted((sweep / ".submitit").glob("*/*_0_log.err"))
    assert len(logs) == 2
    assert sum("error: protocol.normal: unknown class 99" in p.read_text() for p in logs) == 1
    out = report([sweep], plots=False, echo=False)
    (table,) = out["tables"]["auroc"]
    assert table.header[1:3] == ["0", "mean ± std"]  # the failed job's class 99: listed apart, no column
    assert table.rows[0][1].rstrip("!") == f"{ok['metrics']['auroc']:.3f}"  # (`!`: a suspect number)
    assert [r.path.name for r in out["left_out"].not_ok] == ["1"]


# anomaly.sweep silences this for the entry points; pytest resets warning filters for each test
@pytest.mark.filterwarnings(r"ignore:(?s).*'hydra/launcher/submitit_local' is validated against ConfigStore")
def test_submitit_jobs_take_the_cores_they_asked_for(tmp_path):
    compose_config(tmp_path, ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"])
    job = hydra_job()
    assert job["cpus"] == 3 and job["n_jobs"] == 1 and "LocalLauncher" in job["launcher"]
    assert threads_per_job(None, job["n_jobs"], cpus=16, allotted=job["cpus"]) == 3
    assert threads_per_job(None, 1, cpus=2, allotted=8) == 2  # never more than the machine has
    assert threads_per_job(1, 1, cpus=16, allotted=8) == 1  # threads=N wins
    compose_config(tmp_path, [])  # the basic launcher: torch's default, as before
    assert hydra_job()["cpus"] is None and threads_per_job(None, 1, cpus=16) is None


# ---- a pre-empted job, requeued --------------------------------------------------------------------
# ae on digits, 2 epochs of about 4 batches; noise so that the resumed run must also draw the
# uninterrupted run's random numbers; a checkpoint at every epoch's end
RUN = ["trainer.max_epochs=2", "method.noise_std=0.2", "logger=none", "callbacks.model_checkpoint.every_seconds=0"]


def slurm_env(restarts: int | None = None) -> dict[str, str]:
    """What srun gives a one-task job (and, after a requeue, SLURM_RESTART_COUNT)."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
           "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
           "SLURM_JOB_NODELIST": "localhost", "SLURM_NODELIST": "localhost"}
    if restarts is not None:
        env["SLURM_RESTART_COUNT"] = str(restarts)
    return env


def run_in_slurm(*overrides: str, cwd: Path, restarts: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(slurm_env(restarts), PYTHONPATH=str(ROOT))
    return cli.run("anomaly.train", [*overrides, "print_config=false", "trainer.enable_progress_bar=false"],
                   cwd=cwd, env=env)


@pytest.mark.slow
def test_requeued_slurm_job_resumes_from_its_last_epoch(tmp_path):
    # one job of a sweep, as a submitit job runs it: a fixed job dir (sweep dir/0)
    command = ["-m", *RUN, "threads=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}"]
    job = tmp_path / "sweep" / "0"
    ckpt = job / "checkpoints" / "last.ckpt"
    # pre-empted: SIGTERM at batch 1 of epoch 0; the epoch finishes and its checkpoint is written
    proc = run_in_slurm(*command, *kill_at(signal.SIGTERM, epoch=0), cwd=tmp_path, restarts=0)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert error_line(proc).startswith(f"error: run stopped by SIGTERM after epoch 1: 1 epoch kept in {ckpt}")
    assert json.loads((job / "results.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(ckpt)["epoch"] == 0

    # SLURM starts the same command again, with SLURM_RESTART_COUNT=1: no ckpt_path on it
    proc = run_in_slurm(*command, cwd=tmp_path, restarts=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "SLURM job 4242 started again (SLURM_RESTART_COUNT=1): ckpt_path=last" in out
    assert f"resuming from {ckpt} (1 epochs done)" in out
    assert f"sweep {tmp_path / 'sweep'}: 1 jobs: 1 ok" in proc.stdout
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "ok" and results["resumed_from"] == str(ckpt) and results["epochs"] == 2

    reference_dir = tmp_path / "uninterrupted"
    reference = train(compose_config(reference_dir, [*TINY, *RUN]))
    assert results["metrics"] == reference["metrics"]  # exactly
    assert np.array_equal(np.load(job / "scores.npz")["scores"], np.load(reference_dir / "scores.npz")["scores"])


def test_slurm_restart_defaults_ckpt_path_to_last(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    cfg = compose_config(tmp_path, TINY)
    configure_job(cfg)
    assert cfg.ckpt_path is None  # not under SLURM
    for key, value in slurm_env(restarts=0).items():
        monkeypatch.setenv(key, value)
    configure_job(cfg)
    assert cfg.ckpt_path is None  # the first start
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    configure_job(cfg)
    assert cfg.ckpt_path == "last"
    given = compose_config(tmp_path, [*TINY, "ckpt_path=/data/run/last.ckpt"])
    configure_job(given)
    assert given.ckpt_path == "/data/run/last.ckpt"  # a checkpoint on the command line is kept


def test_a_later_attempts_failure_replaces_the_interrupted_record(tmp_path):
    cfg = compose_config(tmp_path, TINY)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"status": "interrupted", "problem": "RunInterrupted: …"}))
    assert write_failure(cfg, AnomalyError("method=ae: non-finite training loss")) == path
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and "non-finite" in record["problem"]
    path.write_text(json.dumps({"status": "ok", "metrics": {"auroc": 0.9}}))
    assert write_failure(cfg, AnomalyError("later")) is None  # the run's own results stay
    assert json.loads(path.read_text())["status"] == "ok"


# ---- DDP over SLURM nodes ------------------------------------------------------------------------
DDP_2_NODES = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]


@pytest.mark.slow
@pytest.mark.parametrize("procid", [0, 5])
def test_ddp_on_two_slurm_nodes_gets_its_rank_from_slurm(tmp_path, monkeypatch, procid):
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it; put it back
    for key in [k for k in os.environ if k.startswith("SLURM_")] + ["MASTER_ADDR", "MASTER_PORT"]:
        monkeypatch.setenv(key, "")  # so that monkeypatch also removes what Lightning sets
        monkeypatch.delenv(key)
    # what srun gives task `procid` of `--nodes=2 --ntasks-per-node=4`
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "8",
                       "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_PROCID": str(procid),
                       "SLURM_LOCALID": str(procid % 4), "SLURM_NODEID": str(procid // 4),
                       "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODELIST": "gpu[07-08]"}.items():
        monkeypatch.setenv(key, value)
    cfg = compose_config(tmp_path, [*TINY, *DDP_2_NODES, "trainer.accelerator=cpu", "logger=none"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 4
    trainer = build_trainer(cfg)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue
    assert env.creates_processes_externally  # srun starts the 8 tasks; Lightning starts none
    assert trainer.world_size == 8 and trainer.num_nodes == 2 and trainer.num_devices == 4
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (procid, procid % 4, procid // 4)
    assert trainer.is_global_zero == (procid == 0)
    # what Lightning checks when it launches: devices and num_nodes match SLURM's tasks and nodes
    launcher = trainer.strategy.launcher
    env.validate_settings(num_devices=launcher.num_processes, num_nodes=launcher.num_nodes)
    assert env.main_address == "gpu07"


def test_slurm_launcher_asks_for_a_task_per_device_on_each_node(tmp_path, monkeypatch):
    """The sbatch script the launcher's settings give (the SLURM executor needs srun on PATH only
    to be built)."""
    import hydra
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", *DDP_2_NODES, f"hydra.sweep.dir={tmp_path}"])
    HydraConfig().set_config(cfg)
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)  # as Hydra builds it, settings resolved
    params = launcher.params
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["submitit_folder"] == f"{tmp_path}/.submitit/%j"

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster="slurm")
    # the plugin's own mapping (BaseSubmititLauncher.launch): shared keys as they are, others slurm_…
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    sbatch = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=240"):
        assert line in sbatch.splitlines(), sbatch
    assert "\nsrun " in sbatch  # the tasks are srun's: SLURM_PROCID etc. for Lightning

    # one GPU job (the README's sweep): one node, one task, one GPU
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=["hydra/launcher=slurm", "trainer=gpu"])
    params = hydra.utils.instantiate(cfg.hydra.launcher).params
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (1, 1, 1)

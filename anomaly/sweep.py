"""What a job of a sweep needs beyond a single run: its share of the machine, a failure that is
recorded instead of ending the sweep, and a summary when the sweep ends.

- `configure_job(cfg)`: torch threads (`threads`, or one share of the cores per parallel job under
  `hydra/launcher=joblib`, or a submitit job's `cpus_per_task`) and, with several GPUs and a
  parallel launcher, one GPU per job. A SLURM job started again (pre-empted and requeued:
  `SLURM_RESTART_COUNT` > 0) gets `ckpt_path=last`, so it resumes without an edited command.
- `job_errors(cfg)`: a failing job writes `results.json` with `status: failed` and the error, so
  the report shows it; in a sweep the error is logged (traceback in the job's log) and the other
  jobs go on; a single run prints an `AnomalyError` as one line and exits 2. A run stopped by
  SIGTERM or SIGINT (`RunInterrupted`) records `status: interrupted`, prints one line and exits
  143 or 130, in a sweep too (the scheduler wants the whole job gone); `ckpt_path=last` resumes it.
- `SweepSummary`: a Hydra callback that, when a multirun ends, counts the jobs' results (ok,
  failed, missing), prints the command that turns them into a report, and exits 1 if any job
  failed. (Handing the exception to Hydra instead would also keep the other jobs running, but
  Hydra then raises before its end-of-sweep callbacks run.)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError, RunInterrupted, runlog
from anomaly.config_schema import check_keys

log = logging.getLogger("anomaly")

def hydra_job() -> dict[str, Any]:
    """Where this process runs: {"multirun", "launcher", "n_jobs", "job_num", "cpus"} (defaults
    when called outside a Hydra app, e.g. from tests). cpus: the cores a submitit job asked for
    (its launcher's cpus_per_task; None under other launchers)."""
    if not HydraConfig.initialized():
        return {"multirun": False, "launcher": "", "n_jobs": 1, "job_num": 0, "cpus": None}
    hc = HydraConfig.get()
    launcher = str(hc.launcher.get("_target_", ""))
    n_jobs = hc.launcher.get("n_jobs", 1) if "joblib" in launcher.lower() else 1
    cpus = hc.launcher.get("cpus_per_task") if "submitit" in launcher.lower() else None
    return {"multirun": hc.mode == RunMode.MULTIRUN, "launcher": launcher,
            "n_jobs": int(n_jobs if n_jobs is not None else 1), "job_num": int(hc.job.get("num", 0) or 0),
            "cpus": int(cpus) if cpus else None}


def parallel_jobs(n_jobs: int, cpus: int | None = None) -> int:
    """joblib's n_jobs as a count of jobs running at once (-1: one per core, -2: all but one…)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus + 1 + n_jobs if n_jobs < 0 else n_jobs)


def threads_per_job(threads: int | None, n_jobs: int, cpus: int | None = None,
                    allotted: int | None = None, load: float | None = None) -> int | None:
    """`threads` when set; else the cores a scheduler allotted the job (`allotted`: submitit's
    cpus_per_task; torch's default would take every core of the node), at most the machine's;
    else, for parallel jobs on one machine, the cores divided among them (two jobs with two
    threads each on two cores stall on each other); else, for one job, the cores the machine's
    `load` (its 1-minute load average) leaves idle, where that is fewer than all (torch's threads
    on cores busy with other work wait on each other: a 15 s run took 183 s); else None (torch's
    default: every core)."""
    if threads is not None:
        if int(threads) < 1:
            raise AnomalyError(f"threads={threads} must be ≥ 1, or null for automatic")
        return int(threads)
    cpus = cpus or os.cpu_count() or 1
    if allotted:
        return max(1, min(int(allotted), cpus))
    jobs = parallel_jobs(n_jobs, cpus)
    if jobs > 1:
        return max(1, cpus // jobs)
    if load is not None and round(load) > 0:
        return max(1, cpus - round(load))
    return None


def machine_load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return None


def gpu_for_job(job_num: int, n_gpus: int, n_jobs: int) -> list[int] | None:
    """With parallel jobs and several GPUs, job k gets GPU k mod n_gpus (None: leave it to the
    trainer config)."""
    if n_gpus <= 1 or parallel_jobs(n_jobs) <= 1:
        return None
    return [job_num % n_gpus]


def slurm_restarts() -> int:
    """How often SLURM has started this job again (pre-empted, or `scontrol requeue`d by submitit
    or Lightning); 0 outside SLURM."""
    if not os.environ.get("SLURM_JOB_ID"):
        return 0
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def configure_job(cfg: DictConfig) -> None:
    """Set this job's torch threads and, under a parallel launcher with several GPUs, its GPU; a
    requeued SLURM job resumes (`ckpt_path=last`: its run dir's last epoch, see
    anomaly.checkpoints.find_last_checkpoint) unless a ckpt_path was given."""
    import torch  # here, not at the top: `--help` and `--cfg job` answer without it

    check_keys(cfg, ["threads"])  # an integer ≥ 1 or null, before it is used
    job = hydra_job()
    load = machine_load()
    threads = threads_per_job(cfg.get("threads"), job["n_jobs"], allotted=job["cpus"], load=load)
    if threads is not None:
        torch.set_num_threads(threads)
        if cfg.get("threads") is None and parallel_jobs(job["n_jobs"]) <= 1 and not job["cpus"]:  # by the load
            log.info("threads=%d: the machine is busy (load %.1f on %d cores), and torch threads on busy "
                     "cores wait on each other; threads=N sets it", threads, load or 0, os.cpu_count() or 1)
    restarts = slurm_restarts()
    if restarts and "ckpt_path" in cfg and cfg.get("ckpt_path") in (None, ""):
        with _writable(cfg):
            cfg.ckpt_path = "last"
        log.warning("SLURM job %s started again (SLURM_RESTART_COUNT=%d): ckpt_path=last",
                    os.environ.get("SLURM_JOB_ID"), restarts)
    trainer = cfg.get("trainer") or {}
    wants_gpu = str(trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto")
    single = trainer.get("devices", "auto") in (1, "1", "auto") and "ddp" not in str(trainer.get("strategy", ""))
    if wants_gpu and single and torch.cuda.is_available():
        devices = gpu_for_job(job["job_num"], torch.cuda.device_count(), job["n_jobs"])
        if devices is not None:
            with _writable(cfg):
                cfg.trainer.accelerator = "gpu"
                cfg.trainer.devices = devices
            log.info("job %d runs on GPU %d", job["job_num"], devices[0])


@contextmanager
def _writable(cfg: DictConfig) -> Iterator[None]:
    readonly = OmegaConf.is_readonly(cfg)
    OmegaConf.set_readonly(cfg, False)
    try:
        yield
    finally:
        OmegaConf.set_readonly(cfg, readonly)


# ---- failures ------------------------------------------------------------------------------------
def failure_record(cfg: DictConfig, err: BaseException, status: str = "failed") -> dict[str, Any]:
    """What the report needs to show a failed job in its place (the settings as requested: the
    classes may never have been resolved)."""

    def plain(key: str) -> Any:
        try:
            node = OmegaConf.select(cfg, key)
            return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        except Exception:  # an unresolvable interpolation must not hide the real error
            return None

    protocol = plain("protocol") or {}
    protocol = {"name": str(protocol.pop("_target_", "?")).rsplit(".", 1)[-1], **protocol} \
        if isinstance(protocol, dict) else {"name": "?"}
    protocol_choice = _choice("protocol")
    if protocol_choice:
        protocol["name"] = protocol_choice
    resolved = getattr(err, "anomaly_protocol", None)  # set when the run got as far as its classes
    if isinstance(resolved, dict):
        protocol = dict(resolved)  # as a successful run records it
    method = plain("method") or {}
    return {
        "method": _choice("method") or str(method.get("_target_", "?")).rsplit(".", 1)[-1].lower(),
        "dataset": plain("dataset.name"),
        "protocol": protocol,
        "method_settings": {k: v for k, v in method.items() if k != "_target_"} if isinstance(method, dict) else {},
        "seed": plain("seed"),
        "status": status,
        "problem": f"{type(err).__name__}: {err}",
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))[-4000:],
        "metrics": {},
        "run_dir": plain("paths.output_dir"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **_provenance(cfg),
    }


def _provenance(cfg: DictConfig) -> dict[str, Any]:
    """What the run was (config, debug label, budget, command), so the report places a failed
    job beside its siblings; {} where the config cannot be resolved."""
    from anomaly import provenance

    try:
        return provenance.record(cfg)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation must not hide the real error
        return {}


def _choice(group: str) -> str | None:
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def write_failure(cfg: DictConfig, err: BaseException, status: str = "failed") -> Path | None:
    """results.json with status failed (or interrupted), unless the run already wrote its own (an
    earlier attempt's failed or interrupted record, e.g. before a SLURM requeue, is replaced)."""
    from anomaly.distributed import process_rank
    from anomaly.results import write_json

    if process_rank() != 0:  # under DDP only rank 0 writes the run's files
        return None
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:
        return None
    path = output_dir / "results.json"
    if path.exists() and _status(path) not in ("failed", "interrupted"):  # else: an earlier attempt's
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, failure_record(cfg, err, status), default=str)
    return path


def _discard(cfg: DictConfig) -> bool:
    from anomaly.console import discard_unused_run_dir

    try:
        return discard_unused_run_dir(Path(cfg.paths.output_dir))
    except Exception:  # noqa: BLE001 - an unresolvable output dir: nothing to remove
        return False


def _status(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status", "ok")
    except (OSError, ValueError, AttributeError):
        return None


def _is_rank_zero() -> bool:
    """Rank 0 of this job: Lightning's launcher sets LOCAL_RANK / NODE_RANK in the processes it
    starts; under SLURM (one task per device, started by srun) SLURM_PROCID decides."""
    from anomaly.distributed import process_rank

    return (int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
            and process_rank() == 0)


@contextmanager
def job_errors(cfg: DictConfig) -> Iterator[None]:
    """Record a failure in the run dir; end a single run with one line for an AnomalyError; in a
    sweep log it and return, so that the other jobs still run (SweepSummary sets the exit code)."""
    try:
        yield
    except RunInterrupted as err:
        # a signal to stop (a scheduler's pre-emption or time limit, Ctrl-C): the whole sweep stops too
        if _is_rank_zero():
            write_failure(cfg, err, status="interrupted")
        runlog.error(str(err))  # on stderr and in the job's log
        sys.exit(err.exit_code)
    except Exception as err:
        multirun = hydra_job()["multirun"]
        # A single run refused for a bad setting or input before its training started leaves
        # nothing (its run dir goes; `anomaly_protocol` marks an error from inside the training);
        # a job of a sweep always records its failure, so the sweep shows it
        refused = isinstance(err, AnomalyError) and not hasattr(err, "anomaly_protocol")
        if _is_rank_zero():
            if multirun or not refused:
                write_failure(cfg, err)
            else:
                _discard(cfg)
        if multirun:
            log.error("job failed: %s: %s", type(err).__name__, err,
                      exc_info=not isinstance(err, AnomalyError))
            print(f"error: {err}", file=sys.stderr, flush=True)
            return
        if isinstance(err, AnomalyError):
            runlog.error(str(err))
            sys.exit(2)
        raise


# ---- end of a sweep -------------------------------------------------------------------------------
def sweep_status(sweep_dir: Path) -> dict[str, list[str]]:
    """Job dirs of a sweep by status: ok, invalid_scores, failed, interrupted, resumed (finished by
    a later run with ckpt_path=last), missing (no results.json)."""
    status: dict[str, list[str]] = {}
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                          key=lambda p: int(p.name)):
        path = job_dir / "results.json"
        try:
            state = json.loads(path.read_text()).get("status", "ok") if path.exists() else "missing"
        except (OSError, ValueError):
            state = "missing"
        status.setdefault(state, []).append(job_dir.name)
    return status


class SweepSummary(Callback):
    """When a multirun ends: how many jobs succeeded or failed, and the report command."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        status = sweep_status(sweep_dir)
        total = sum(len(v) for v in status.values())
        parts = [f"{len(v)} {k}" for k, v in sorted(status.items())]
        message = f"sweep {sweep_dir}: {total} jobs: " + ", ".join(parts)
        bad = {k: v for k, v in status.items() if k != "ok"}
        if bad:
            message += " (" + "; ".join(f"{k}: jobs {', '.join(v)}" for k, v in bad.items()) + ")"
        print(message, file=sys.stderr if bad else sys.stdout, flush=True)
        if OmegaConf.select(config, "hydra.sweeper._target_", default="") and "optuna" in str(config.hydra.sweeper._target_).lower():
            print_best_trial(sweep_dir, str(config.get("optimized_metric") or "auroc"),
                             str(OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")))
        print(f"report: python -m anomaly.report {sweep_dir}", flush=True)
        if "failed" in status:
            sys.exit(1)


def print_best_trial(sweep_dir: Path, metric: str, direction: str) -> dict | None:
    """After a tuning sweep: the trial chosen by its validation number (named as such), then that
    trial's test numbers, labelled as the one evaluation on the test split after the choice."""
    from anomaly.console import print_results
    from anomaly.evaluation import METRIC_LABELS

    trials = []
    for path in sweep_dir.glob("*/results.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        value = (data.get("val_metrics") or {}).get(metric)
        if data.get("status") == "ok" and isinstance(value, (int, float)) and value == value:
            trials.append((value, path.parent.name, data))
    if not trials:
        print(f"tuning: no trial has a validation {metric}", flush=True)
        return None
    value, job, best = (max if direction == "maximize" else min)(trials, key=lambda t: t[0])
    settings = {k: v for k, v in (best.get("method_settings") or {}).items()}
    print(f"best trial: job {job}, validation {METRIC_LABELS.get(metric, metric)} {value:.4f} (the metric tuned, "
          f"{direction}d over {len(trials)} trials; chosen on validation, never on test)", flush=True)
    print(f"its settings: {json.dumps(settings, default=str)}", flush=True)
    print("the test split, once, for the chosen trial only:", flush=True)
    print_results(best)
    return best

"""Several processes (`trainer=ddp`, `trainer=ddp_cpu`) under Hydra.

Lightning's DDP launcher starts ranks 1… by re-running the command line of rank 0 with
`hydra.run.dir=<run dir>`. Its own version of that command breaks in a multirun: it passes `-m`
and the whole sweep on (each rank would start a sweep of its own, in new dirs), and the run dir
it names is the single-run pattern, not the job's dir. `hydra_job_command` builds the command from
the job itself (its overrides, its output dir) instead, and `release` undoes what the launch left
in this process (environment, process group), so that the next job of a sweep launches its own
ranks rather than waiting for the previous job's.

Before the Trainer exists, `process_rank()` tells rank 0 (which writes the run's files) from the
others.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from anomaly import AnomalyError

log = logging.getLogger("anomaly")

# what Lightning's subprocess launcher puts into the environment of the process that launches
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra command-line flags that take a value and must reach the other ranks unchanged
CONFIG_FLAGS = {"--config-path": "-cp", "--config-name": "-cn", "--config-dir": "-cd"}
# Hydra overrides that concern launching or sweeping (the other ranks run one job, in its dir)
DROPPED_HYDRA = ("hydra.mode", "hydra.run.", "hydra.sweep.", "hydra.launcher", "hydra/launcher",
                 "hydra.sweeper", "hydra/sweeper", "hydra.job.name", "hydra.output_subdir")
CHILD_WAIT_S = 120


def strategy_for(strategy: Any, model: Any | None) -> str | None:
    """The DDP strategy a method needs instead of the configured one (None: keep it).

    Methods with manual optimisation (GANs: gpnd, adae, …) update one network per backward pass,
    so each pass leaves the other networks' parameters unused; plain DDP refuses that, DDP that
    looks for unused parameters syncs each pass's gradients."""
    if strategy == "ddp" and model is not None and not getattr(model, "automatic_optimization", True):
        return "ddp_find_unused_parameters_true"
    return None


# where launchers put a process's global rank, in the order Lightning reads them
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def process_rank() -> int:
    """This process's global rank before any Trainer exists: Lightning's launcher gives the
    processes it starts LOCAL_RANK, torchrun and SLURM set RANK / SLURM_PROCID; Lightning reads
    them into rank_zero_only.rank on import (read from there once Lightning is loaded, else from
    the environment as Lightning would: a refused setting need not load Lightning)."""
    module = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if module is not None:
        return int(getattr(module.rank_zero_only, "rank", 0) or 0)
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _config_flags(argv: Sequence[str]) -> list[str]:
    """The --config-path/--config-name/--config-dir flags of a Hydra command line, with values."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        for long, short in CONFIG_FLAGS.items():
            if arg in (long, short) and i + 1 < len(argv):
                out += [arg, argv[i + 1]]
                i += 1
            elif arg.startswith(long + "="):
                out.append(arg)
        i += 1
    return out


def _quoted(value: str) -> str:
    """A value as a Hydra override reads it verbatim (paths may hold characters the grammar treats
    specially)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command that runs this Hydra job again as another rank, and its working dir.

    Replaces Lightning's `_hydra_subprocess_cmd` (same signature): the job's own overrides (in a
    multirun: this job's values, not the sweep) and its output dir as `hydra.run.dir`."""
    import __main__
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name.startswith("anomaly."):
        command = [sys.executable, "-m", spec.name]
    elif spec is None and getattr(__main__, "__file__", None):  # a script run by path
        command = [sys.executable, str(Path(get_original_cwd(), __main__.__file__).resolve())]
    else:
        found = spec.name if spec is not None else "an interactive session"
        raise AnomalyError(f"trainer.strategy=ddp starts its other processes by running the command "
                           f"again, which it cannot do from {found}: run python -m anomaly.train "
                           f"(or anomaly.evaluate) with Hydra's basic launcher (jobs one after another, "
                           f"each on every device), or give parallel jobs one device each (trainer=gpu)")
    command += _config_flags(sys.argv[1:])
    command += list(hc.overrides.task)
    command += [o for o in hc.overrides.hydra if not o.lstrip("~+").startswith(DROPPED_HYDRA)]
    command += [f"hydra.run.dir={_quoted(str(Path(hc.runtime.output_dir).resolve()))}",
                f"hydra.job.name={hc.job.name}_rank{local_rank}",
                # rank 0 wrote .hydra/ already; the other ranks must not rewrite it
                "hydra.output_subdir=null"]
    return command, get_original_cwd()


def use_job_command() -> None:
    """Make Lightning's subprocess launcher start the other ranks with `hydra_job_command`."""
    try:
        from lightning.pytorch.strategies.launchers import subprocess_script
    except ImportError:
        return
    if hasattr(subprocess_script, "_hydra_subprocess_cmd"):  # the name Lightning looks up at launch
        subprocess_script._hydra_subprocess_cmd = hydra_job_command


@contextmanager
def processes() -> Iterator[list]:
    """Around one run: yields a list to add its Trainers to; afterwards waits for the ranks they
    launched, ends the process group and restores the launch environment (see `release`)."""
    env = {k: os.environ.get(k) for k in LAUNCH_ENV}
    trainers: list = []
    try:
        yield trainers
    finally:
        release(trainers, env)


def release(trainers: Sequence[Any], env: dict[str, str | None]) -> None:
    """Wait for the ranks these Trainers launched, destroy the process group, and put back the
    launch variables as they were before (LOCAL_RANK left set makes Lightning think the next
    job's processes were started for it, and the job would wait for ranks that never come)."""
    launched = [p for t in trainers for p in (getattr(getattr(t.strategy, "launcher", None), "procs", None) or [])]
    for proc in launched:
        try:
            code = proc.wait(timeout=CHILD_WAIT_S)
        except subprocess.TimeoutExpired:
            # not killed here: Lightning's process observer would take a killed rank for a crash
            # and kill this process, and with it the rest of a sweep
            log.warning("rank process %s still running %ss after rank 0 finished", proc.pid, CHILD_WAIT_S)
            continue
        if code:
            log.warning("rank process %s exited with code %s", proc.pid, code)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if launched:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""`python -m anomaly.reproduce`: every table composes and runs at budget=smoke on generated files;
cells that differ only in test keys share one training and score each image once, with the
numbers a separate training of that cell gives; a cell whose setting changes the training
images is refused; a table stopped by a signal keeps its trainings' epochs and goes on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomaly import RunInterrupted
from anomaly.checkpoints import epochs_done, load_checkpoint
from anomaly.reproduce.cli import load_tables, run, run_suffix
from anomaly.reproduce.kept import keep_results
from anomaly.reproduce.runner import run_group
from anomaly.reproduce.tables import Cell, Table
from tests.conftest import CONF_DIR, compose_config
from tests.helpers import cli

TABLES = sorted(p.stem for p in (CONF_DIR / "table").glob("*.yaml"))
# (no figures: most of a smoke cell's time; tests/test_train.py checks them)
QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "data.eval_batch_size=64", "plots=false"]
# what the tiny generated sets cannot hold of a table's published protocol
EXTRA = {
    "vae_emnist": ["protocol.contamination=0.3"],
    "vae_fashion_mnist": ["protocol.n_train=null", "protocol.n_val=null", "protocol.n_test=null",
                          "protocol.contamination=0.3"],
    "dae_fashion_mnist_size": ["protocol.n_train=5"],
    "benchmark_mnist": ["protocol.n_test=40"],
    "benchmark_fashion_mnist": ["protocol.n_test=40"],
}


@pytest.fixture(scope="module")
def data_root(every_dataset_root):
    return every_dataset_root


def run_app(tmp_path: Path, overrides: list[str]) -> list[dict]:
    """`python -m anomaly.reproduce overrides…` in this process (results kept in tmp_path/kept);
    the cells' results.json in their run dirs."""
    cfg = compose_config(tmp_path / "runs", overrides, config_name="reproduce")
    cfg.results_dir = str(tmp_path / "kept")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        try:
            run(cfg)
        except SystemExit as stop:  # failed cells end a single run with exit 1
            assert stop.code == 1
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("results.json"))]


def first_training(table: Table) -> list[str]:
    """Overrides that restrict a table to its first training group (every test key kept; a key
    the tiny data needs another value for is left to EXTRA)."""
    first = table.cells()[0]
    extra = {o.split("=", 1)[0] for o in EXTRA.get(table.name, [])}
    return [f"{k}={_text(v)}" for k, v in table.training_key(first) if k not in extra]


def _text(value) -> str:
    return "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, tuple) else str(value)


@pytest.mark.slow
def test_every_table_lists_with_its_grid_budgets_and_cost():
    names = {t.name for t in load_tables()}
    assert names == set(TABLES) >= {"gpnd_mnist", "gpnd_fashion_mnist", "gpnd_coil100", "arae_mnist_p1",
                                     "arae_mnist_p2", "arae_fashion_mnist_p2", "arae_coil100", "adae_mnist",
                                     "vae_emnist", "anogan_mnist", "fanogan_mnist"}
    out = cli.run("anomaly.reproduce", ["--list"], cwd=CONF_DIR.parent, env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    assert "gpnd_mnist" in out.stdout and "reduced" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80  # an 80-column terminal
    # every table's name whole on a line of its own: names that differ only at the end stay apart
    assert {line.split()[0] for line in out.stdout.splitlines() if line.split()} >= names
    assert "(n=" in out.stdout  # minutes measured by the kept results, where there are some
    assert "limit_train_batches=2" in out.stdout  # a setting is never cut mid-word


@pytest.mark.slow
def test_gpnd_mnist_table_trains_fifty_models_for_250_cells():
    table = load_tables("gpnd_mnist")[0]
    cells = table.cells()
    assert len(cells) == 250 and len(table.groups(cells)) == 50
    assert table.published(cells[0]) == {"f1_inlier": 0.967}


@pytest.mark.slow
@pytest.mark.parametrize("name", TABLES)
def test_table_runs_at_smoke(tmp_path, data_root, name):
    table = load_tables(name)[0]
    results = run_app(tmp_path, [f"table={name}", "budget=smoke", *first_training(table), *QUIET,
                                 f"paths.data_dir={data_root}", "dataset.loader.download=false",
                                 *EXTRA.get(name, [])])
    assert len(results) == len(table.cells()) // len(table.groups(table.cells()))
    for data in results:
        assert data["status"] in ("ok", "invalid_scores"), data.get("error")
        assert data["budget"] == "smoke" and data["debug"]  # smoke runs are labelled
        assert data["reproduce"]["table"] == name and data["command"].startswith("python -m anomaly.reproduce")
        assert f"table={name}" in data["command"] and "budget=smoke" in data["command"]
    # one training for the whole group
    assert len({d["reproduce"]["trained_in"] for d in results}) == 1
    assert not list((tmp_path / "kept").rglob("*.json"))  # smoke runs are never kept


def ae_table(test_keys: list[str], grid: dict) -> Table:
    return Table(name="t", source="test", metric="auroc", grid=grid, test_keys=test_keys, paper=[],
                 budgets={"paper": {}, "reduced": {}, "smoke": {"trainer.max_epochs": 2}},
                 variants={"ae": ["dataset=mnist", "protocol=gpnd_folds", "protocol.normal=[3]"]})


def run_cells(tmp_path: Path, table: Table, cells: list[Cell], data_root: Path, budget: str = "smoke",
              kept: Path | None = None, extra: tuple[str, ...] = ()) -> list[dict]:
    """The cells, group by group as anomaly.reproduce runs them (results kept in `kept`; `extra`:
    more overrides)."""
    user = [*QUIET, f"paths.data_dir={data_root}", "dataset.loader.download=false", "data.batch_size=32",
            "dataset.image_size=16", *extra]
    GlobalHydra.instance().clear()
    out = []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        for group in table.groups(cells):
            out += run_group(table, group, budget, user, tmp_path / "runs", kept)
    return out


def test_within_a_table_run_a_cell_is_composed_once_and_each_caller_gets_its_own_copy(tmp_path, monkeypatch):
    """one_composition_per_cell: the checks, the kept-result lookup and the run of a cell share one
    Hydra composition, each taking a copy (a caller that fills in its paths changes no other's);
    outside it, every call composes."""
    from anomaly.reproduce import runner

    calls = []
    real = runner.compose
    monkeypatch.setattr(runner, "compose", lambda **kw: calls.append(kw["overrides"]) or real(**kw))
    table = ae_table([], {"variant": ["ae"], "protocol.outlier_ratio": [0.2, 0.4]})
    first, second = table.cells()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        with runner.one_composition_per_cell():
            a = runner.compose_cell(table, first, "smoke", [], tmp_path / "a", "cmd")
            b = runner.compose_cell(table, first, "smoke", [], tmp_path / "b", "cmd")
            runner.compose_cell(table, second, "smoke", [], tmp_path / "c", "cmd")
        assert len(calls) == 2  # one per cell
        assert a.paths.output_dir != b.paths.output_dir and a.protocol == b.protocol
        runner.compose_cell(table, first, "smoke", [], tmp_path / "d", "cmd")
        assert len(calls) == 3  # no cache outside a table run
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_shared_training_gives_the_numbers_of_a_separate_training(tmp_path, data_root):
    table = ae_table(["protocol.outlier_ratio"], {"variant": ["ae"], "protocol.outlier_ratio": [0.2, 0.4]})
    shared = run_cells(tmp_path / "shared", table, table.cells(), data_root)
    alone = run_cells(tmp_path / "alone", table, table.cells({"protocol.outlier_ratio": 0.4}), data_root)
    assert [r["status"] for r in shared + alone] == ["ok"] * 3
    assert shared[0]["reproduce"]["trained_in"] == shared[1]["reproduce"]["trained_in"]
    assert not (tmp_path / "shared" / "runs" / table.cells()[1].slug() / "checkpoints").exists()
    assert shared[1]["train_hash"] == alone[0]["train_hash"]
    assert shared[1]["metrics"] == alone[0]["metrics"]  # cached scores = a fresh run's, to the bit
    assert shared[1]["split_sizes"] == alone[0]["split_sizes"]


@pytest.mark.slow
def test_a_requeued_slurm_job_resumes_its_training_cell(tmp_path, data_root, monkeypatch):
    table = ae_table(["protocol.outlier_ratio"], {"variant": ["ae"], "protocol.outlier_ratio": [0.2, 0.4]})
    first = run_cells(tmp_path, table, table.cells(), data_root)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = run_cells(tmp_path, table, table.cells(), data_root)
    assert first[0].get("resumed_from") is None
    assert again[0]["resumed_from"].endswith("last.ckpt")  # the first run's model, not a new training
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]
    assert again[0]["train_hash"] == again[1]["train_hash"] == first[1]["train_hash"]


@pytest.mark.slow
def test_a_test_key_that_changes_the_training_images_is_refused(tmp_path, data_root):
    table = ae_table(["protocol.fold"], {"variant": ["ae"], "protocol.fold": [0, 1]})
    results = run_cells(tmp_path, table, table.cells(), data_root)
    assert results[0]["status"] == "ok" and results[1]["status"] == "failed"
    assert "changes the training images" in results[1]["error"]


# ---- a result is never lost; a table resumes where it stopped -------------------------------------
def write_run(folder: Path, **fields) -> Path:
    data = {"status": "ok", "config_hash": "aaa", "metrics": {"auroc": 0.9}, "debug": None,
            "created": "2026-12-04T10:00:00+00:00", "run_dir": str(folder), "checkpoint": "x.ckpt", **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def test_a_kept_ok_result_is_never_replaced_by_a_failed_smoke_or_different_run(tmp_path):
    kept = tmp_path / "kept" / "cell"
    assert keep_results(write_run(tmp_path / "run0"), kept) == "kept"
    first = (kept / "results.json").read_text()
    assert "run_dir" not in json.loads(first) and "checkpoint" not in json.loads(first)  # no local paths
    assert keep_results(write_run(tmp_path / "run1", status="failed", metrics=None), kept) == "refused"
    assert keep_results(write_run(tmp_path / "run2", status="interrupted"), kept) == "refused"
    assert keep_results(write_run(tmp_path / "run3", debug="trainer.limit_train_batches=2"), kept) == "refused"
    assert keep_results(write_run(tmp_path / "run4", created="2026-12-05T10:00:00+00:00"), kept) == "unchanged"
    assert (kept / "results.json").read_text() == first
    # the same config with other numbers: kept beside, never swapped in
    assert keep_results(write_run(tmp_path / "run5", metrics={"auroc": 0.8},
                                  created="2026-12-06T10:00:00+00:00"), kept) == "beside"
    assert (kept / "results.json").read_text() == first
    (beside,) = kept.glob("results.differs-2026-12-06T100000-*.json")
    assert json.loads(beside.read_text())["differs_from_kept"] == {"auroc": [0.9, 0.8]}
    # another run config (a default changed): the command's new result replaces the old one with rerun=true
    assert keep_results(write_run(tmp_path / "run6", config_hash="bbb", metrics={"auroc": 0.7}), kept,
                        rerun=True) == "replaced"
    assert json.loads((kept / "results.json").read_text())["metrics"] == {"auroc": 0.7}
    # a failed cell's record is kept where nothing ok was
    assert keep_results(write_run(tmp_path / "run7", status="failed"), tmp_path / "kept" / "other") == "kept"


def test_under_ddp_only_rank_zero_writes_a_cells_failure(tmp_path, monkeypatch):
    import anomaly.distributed
    from anomaly.reproduce.runner import failed_results

    extra = {"reproduce": {"cell": {"protocol.normal": [2]}}}
    monkeypatch.setattr(anomaly.distributed, "process_rank", lambda: 1)
    record = failed_results(None, tmp_path / "rank1", ValueError("x"), extra)
    assert record["status"] == "failed" and not (tmp_path / "rank1").exists()
    monkeypatch.setattr(anomaly.distributed, "process_rank", lambda: 0)
    failed_results(None, tmp_path / "rank0", ValueError("x"), extra)
    assert json.loads((tmp_path / "rank0" / "results.json").read_text())["status"] == "failed"


def test_a_setting_beside_the_grid_keeps_its_result_apart():
    table = load_tables("gpnd_mnist")[0]
    cell = table.cells()[0]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        assert run_suffix(table, cell, "reduced", ["seed=1"]) == "-seed1"
        assert run_suffix(table, cell, "reduced", ["seed=0"]) == ""  # the table's own value
        assert run_suffix(table, cell, "reduced", ["paths.data_dir=x", "threads=1", "trainer=gpu",
                                                   "trainer.enable_progress_bar=false"]) == ""
        assert run_suffix(table, cell, "reduced", ["trainer.max_epochs=6"]) == ""  # the budget's own
        assert run_suffix(table, cell, "reduced", ["trainer.max_epochs=7", "method.lr=0.001"]) == \
            "-trainer.max_epochs7-method.lr0.001"


@pytest.mark.slow
def test_a_table_stopped_in_its_second_training_resumes_without_training_twice(tmp_path, data_root, monkeypatch):
    """A table of two trainings, stopped (SIGTERM) in the second one's second epoch and started
    again: the first training's cell is skipped, the second resumes its last checkpoint, and the
    results are an uninterrupted run's."""
    table = ae_table([], {"variant": ["ae"], "protocol.fold": [0, 1]})
    whole = run_cells(tmp_path / "whole", table, table.cells(), data_root, budget="smoke",
                      kept=tmp_path / "whole" / "kept")

    import anomaly.pipeline as pipeline
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class StopInSecondEpoch(Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise SIGTERMException

    built = []
    original = pipeline.build_trainer

    def build_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)
        built.append(trainer)
        if len(built) == 2:  # the second training
            trainer.callbacks.insert(0, StopInSecondEpoch())
        return trainer

    monkeypatch.setattr(pipeline, "build_trainer", build_trainer)
    kept = tmp_path / "stopped" / "kept"
    every_epoch = ("callbacks.model_checkpoint.every_seconds=0",)  # epoch 0's checkpoint is there to resume
    with pytest.raises(RunInterrupted):
        run_cells(tmp_path / "stopped", table, table.cells(), data_root, budget="smoke", kept=kept, extra=every_epoch)
    monkeypatch.setattr(pipeline, "build_trainer", original)
    again = run_cells(tmp_path / "stopped", table, table.cells(), data_root, budget="smoke", kept=kept,
                      extra=every_epoch)
    assert again[0].get("skipped") and not again[1].get("skipped")  # the first training is not redone
    assert again[1]["resumed_from"].endswith("last.ckpt")
    assert [r["metrics"] for r in again] == [r["metrics"] for r in whole]
    # a third start finds both cells done
    third = run_cells(tmp_path / "stopped", table, table.cells(), data_root, budget="smoke", kept=kept)
    assert all(r.get("skipped") for r in third)


@pytest.mark.slow
def test_the_device_script_runs_a_table_at_smoke_on_the_cpu(tmp_path, data_root):
    """`BUDGET=smoke DEVICE=cpu bash device/campaign.sh …`: the GPU issues' prepared script, as
    it runs there (its wheels step skipped: hydra is installed here)."""
    out = tmp_path / "out"
    env = {**os.environ, "BUDGET": "smoke", "DEVICE": "cpu", "JOBS": "2", "DATA_DIR": str(data_root),
           "PYTHON": sys.executable,
           "OUT": str(out), "RUNS": str(tmp_path / "runs"),
           "ARGS": "data.eval_batch_size=64 dataset.loader.download=false print_config=false plots=false"}
    proc = subprocess.run(["bash", "device/campaign.sh", "gpnd_coil100:protocol.n_normal=1 protocol.draw=0"],
                          cwd=CONF_DIR.parent, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads((out / "cells-gpnd_coil100.json").read_text())
    assert [c["status"] for c in cells] == ["ok"] and cells[0]["budget"] == "smoke"
    assert "machine" in cells[0] and "numpy" in cells[0]["versions"]  # where and with what it ran
    assert (out / "log-gpnd_coil100.txt").is_file() and not (out / "results-gpnd_coil100.tgz").exists()


# arae_mnist_p2 restricted to digit 0: two trainings (variants arae_linf and dae) of 3 one-batch epochs
STOPPABLE = ["table=arae_mnist_p2", "budget=smoke", "protocol.normal=[0]", "trainer.max_epochs=3",
             "dataset.loader.download=false", *QUIET]


@pytest.mark.slow
def test_a_table_stopped_in_process_keeps_the_epoch_and_no_result(tmp_path, data_root, capsys):
    cfg = compose_config(tmp_path / "runs", [*STOPPABLE, "variant=dae", f"paths.data_dir={data_root}",
                                             "+callbacks.fault._target_=tests.helpers.faults.SignalAt",
                                             f"+callbacks.fault.signum={int(signal.SIGTERM)}",
                                             "+callbacks.fault.epoch=1", "+callbacks.fault.batch=0"],
                         config_name="reproduce")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        with pytest.raises(SystemExit) as stopped:
            run(cfg)
    assert stopped.value.code == 143
    (ckpt,) = (tmp_path / "runs").rglob("checkpoints/last.ckpt")
    assert epochs_done(load_checkpoint(ckpt)) == 2
    assert (f"error: run stopped by SIGTERM after epoch 2: 2 epochs kept in {ckpt}; the same command resumes at "
            "epoch 3") in capsys.readouterr().err
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("cells.json"))


@pytest.mark.slow
def test_a_table_fans_its_trainings_out_and_a_sigterm_keeps_their_epochs(tmp_path, data_root):
    """jobs=2: the table's two trainings as two processes, one line each. SIGTERM to the parent
    while both train their 2nd epoch: each finishes it, keeps it and stops (a line each), the
    parent exits 143; the same command again resumes both and ends with an uninterrupted run's
    cells."""
    logs, markers = tmp_path / "logs", tmp_path / "markers"
    command = [*STOPPABLE, "jobs=2", f"paths.data_dir={data_root}", f"paths.log_dir={logs}", "results_dir=null"]
    # each job waits in its 2nd epoch until the signal reached it
    wait = ["+callbacks.wait._target_=tests.helpers.faults.WaitForSignal", f"+callbacks.wait.marker_dir={markers}"]
    parent = cli.Command("anomaly.reproduce", [*command, *wait], cwd=CONF_DIR.parent, env=None)
    deadline = time.monotonic() + 600
    while len(list(markers.glob("*"))) < 2 and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    parent.send_signal(signal.SIGTERM)
    stopped = parent.wait(timeout=600)
    out, err = stopped.stdout, stopped.stderr
    assert stopped.returncode == 143, out[-3000:] + err[-3000:]
    ckpts = sorted(logs.rglob("checkpoints/last.ckpt"))
    assert len(ckpts) == 2 and [epochs_done(load_checkpoint(c)) for c in ckpts] == [2, 2]
    lines = [line for line in out.splitlines() if "· stopped]" in line]
    assert len(lines) == 2, out[-3000:]
    for ckpt in ckpts:  # the job's own error line, on the parent's line for it
        variant = ckpt.parent.parent.name.split("-")[0]
        assert any(line.endswith(f" variant={variant} protocol.normal=[0]: run stopped by SIGTERM after epoch 2: 2 "
                                 f"epochs kept in {ckpt}; the same command resumes at epoch 3") for line in lines), out
    assert ("error: table arae_mnist_p2 stopped by SIGTERM: 2 trainings stopped (the lines above), 0 not started; "
            "the same command goes on where they stopped") in err
    assert not list(logs.rglob("results.json"))  # nothing kept as a result

    again = cli.run("anomaly.reproduce", command, cwd=CONF_DIR.parent, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    lines = [line for line in again.stdout.splitlines() if "done ·" in line]
    assert len(lines) == 2 and lines[-1].startswith("[2/2 done · 0 running · 0 left]")
    (cells,) = logs.glob("reproduce/arae_mnist_p2/smoke/*/cells.json")
    resumed = {c["reproduce"]["cell"]["variant"]: c for c in json.loads(cells.read_text())}
    assert sorted(resumed) == ["arae_linf", "dae"]
    # each went on from its kept epochs: the 3rd epoch only
    assert sorted(Path(c["resumed_from"]) for c in resumed.values()) == ckpts
    assert all(c["epochs"] == 3 for c in resumed.values())
    # an uninterrupted run of the same cells (in this process, with the jobs' threads)
    threads = torch.get_num_threads()
    try:
        whole = run_app(tmp_path / "whole", [*STOPPABLE, f"paths.data_dir={data_root}",
                                             f"threads={max(1, (os.cpu_count() or 1) // 2)}"])
    finally:
        torch.set_num_threads(threads)
    assert {c["reproduce"]["cell"]["variant"]: c["metrics"] for c in whole} == \
        {v: c["metrics"] for v, c in resumed.items()}


def test_measured_minutes_tell_gpu_runs_by_their_recorded_accelerator(tmp_path):
    from anomaly.reproduce.cli import measured_minutes

    def kept(name: str, seconds: float, **fields) -> None:
        path = tmp_path / "t" / "paper" / name
        path.mkdir(parents=True)
        (path / "results.json").write_text(json.dumps({"status": "ok", "train_seconds": seconds, **fields}))

    gpu_machine = {"gpus": ["NVIDIA H200"]}
    kept("a", 60, accelerator="cuda", machine=gpu_machine, command="python -m anomaly.reproduce table=t")
    kept("b", 180, accelerator="cpu", machine=gpu_machine, command="python -m anomaly.reproduce table=t")
    kept("c", 120, machine=gpu_machine, command="python -m anomaly.reproduce table=t trainer=gpu")  # older file
    kept("d", 600, machine={}, command="python -m anomaly.reproduce table=t")
    assert measured_minutes("t", "paper", tmp_path) == {"gpu": (1.5, 2), "cpu": (6.5, 2)}

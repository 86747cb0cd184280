"""`python -m anomaly.reproduce`: every table composes and runs at budget=smoke on generated files;
cells that differ only in test keys share one training and score each image once, with the
numbers a separate training of that cell gives; a cell whose setting changes the training
images is refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomaly.reproduce.cli import load_tables, run
from anomaly.reproduce.runner import run_group
from anomaly.reproduce.tables import Cell, Table
from tests.conftest import CONF_DIR, compose_config

TABLES = sorted(p.stem for p in (CONF_DIR / "table").glob("*.yaml"))
QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "data.eval_batch_size=64"]
# what the tiny generated sets cannot hold of a table's published protocol
EXTRA = {
    "vae_emnist": ["protocol.contamination=0.3"],
    "vae_fashion_mnist": ["protocol.n_train=null", "protocol.n_val=null", "protocol.n_test=null",
                          "protocol.contamination=0.3"],
    "dae_fashion_mnist_size": ["protocol.n_train=5"],
}


@pytest.fixture(scope="module")
def data_root(every_dataset_root):
    return every_dataset_root


def run_app(tmp_path: Path, overrides: list[str]) -> list[dict]:
    """`python -m anomaly.reproduce overrides…` in this process; the cells' results.json."""
    cfg = compose_config(tmp_path / "runs", overrides, config_name="reproduce")
    cfg.results_dir = str(tmp_path / "kept")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        try:
            run(cfg)
        except SystemExit as stop:  # failed cells end a single run with exit 1
            assert stop.code == 1
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "kept").rglob("results.json"))]


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
    out = subprocess.run([sys.executable, "-m", "anomaly.reproduce", "--list"], capture_output=True,
                         text=True, timeout=300, cwd=CONF_DIR.parent)
    assert out.returncode == 0, out.stderr
    assert "gpnd_mnist" in out.stdout and "reduced" in out.stdout


@pytest.mark.slow
def test_gpnd_mnist_table_trains_fifty_models_for_250_cells():
    table = next(t for t in load_tables() if t.name == "gpnd_mnist")
    cells = table.cells()
    assert len(cells) == 250 and len(table.groups(cells)) == 50
    assert table.published(cells[0]) == {"f1_inlier": 0.967}


@pytest.mark.slow
@pytest.mark.parametrize("name", TABLES)
def test_table_runs_at_smoke(tmp_path, data_root, name):
    table = next(t for t in load_tables() if t.name == name)
    results = run_app(tmp_path, [f"table={name}", "budget=smoke", *first_training(table), *QUIET,
                                 f"paths.data_dir={data_root}", "dataset.loader.download=false",
                                 *EXTRA.get(name, [])])
    assert len(results) == len(table.cells()) // len(table.groups(table.cells()))
    for data in results:
        assert data["status"] in ("ok", "invalid_scores"), data.get("error")
        assert data["budget"] == "smoke" and data["debug"]  # smoke runs are labelled
        assert data["reproduce"]["table"] == name and data["command"].startswith("python -m anomaly.reproduce")
        assert f"table={name}" in data["command"] and "budget=smoke" in data["command"]
        assert "run_dir" not in data and "checkpoint" not in data  # kept copies: no local paths
    # one training for the whole group
    assert len({d["reproduce"]["trained_in"] for d in results}) == 1


def ae_table(test_keys: list[str], grid: dict) -> Table:
    return Table(name="t", source="test", metric="auroc", grid=grid, test_keys=test_keys, paper=[],
                 budgets={"paper": {}, "reduced": {}, "smoke": {"trainer.max_epochs": 2}},
                 variants={"ae": ["dataset=mnist", "protocol=gpnd_folds", "protocol.normal=[3]"]})


def run_cells(tmp_path: Path, table: Table, cells: list[Cell], data_root: Path) -> list[dict]:
    user = [*QUIET, f"paths.data_dir={data_root}", "dataset.loader.download=false", "data.batch_size=32",
            "dataset.image_size=16"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return run_group(table, cells, "smoke", user, tmp_path / "runs", None)


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

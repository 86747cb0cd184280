"""logger=wandb, offline (no account, no network): what the run files hold afterwards."""

from pathlib import Path

import pytest

from anomaly.data.protocols.gpnd_folds import GPNDFolds
from anomaly.data.protocols.holdout_class import HoldoutClass
from anomaly.data.protocols.one_class import OneClass
from anomaly.loggers import run_name
from anomaly.pipeline import train
from tests.conftest import TINY, compose_config
from tests.helpers.wandb_offline import config_value, read_run


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """wandb quiet and offline, its global files inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_global"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*"))


@pytest.mark.slow
def test_offline_run_holds_metrics_config_and_images(tmp_path, wandb_offline):
    overrides = [*TINY, "plots=true", "logger=wandb", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                 "callbacks.validation_cadence.every_n_batches=1",
                 "protocol.normal=[3]", "seed=1"]
    results = train(compose_config(tmp_path / "a", overrides))
    # a second run in the same process (as the jobs of a sweep) gets a run of its own
    train(compose_config(tmp_path / "b", [*overrides[:-1], "seed=2", "logger.wandb.tags=[mine]"]))

    runs = offline_runs(tmp_path / "a")
    assert len(runs) == 1 and len(offline_runs(tmp_path / "b")) == 1
    run = read_run(next(runs[0].glob("run-*.wandb")))
    assert run.name == "ae-digits-one_class-n3-s1" and run.project == "anomaly"
    assert run.tags == ["ae", "digits", "one_class"] and run.group == ""  # a single run: no group
    assert run.exit_code == 0

    # the final test metrics, as results.json has them
    for key, value in results["metrics"].items():
        assert run.summary[f"test/{key}"] == pytest.approx(value, abs=1e-6), key
    assert run.summary["status"] == "ok" and run.summary["epochs"] == 2
    # losses per step, validation metrics per epoch
    assert len(run.metric("train/loss_step")) >= 4
    assert len(run.metric("val/auroc")) == 3  # two epochs, then the threshold validation after fit
    # the resolved config
    assert config_value(run.config, "protocol.normal") == [3]
    assert config_value(run.config, "seed") == 1
    assert config_value(run.config, "dataset.name") == "digits"
    assert config_value(run.config, "paths.output_dir") == str(tmp_path / "a")  # resolved
    assert config_value(run.config, "method._target_") == "anomaly.methods.ae.Autoencoder"
    # the plots, as images in the run's media
    for key in ("test/examples", "test/roc", "test/score_hist"):
        path = runs[0] / "files" / run.summary[f"{key}/path"]
        assert path.read_bytes()[:4] == b"\x89PNG", key

    other = read_run(next(offline_runs(tmp_path / "b")[0].glob("run-*.wandb")))
    assert other.name == "ae-digits-one_class-n3-s2" and other.tags == ["mine", "ae", "digits", "one_class"]


@pytest.mark.slow
def test_offline_flag_without_env(tmp_path, wandb_offline, monkeypatch):
    """logger.wandb.offline=true alone keeps W&B offline (Lightning sets WANDB_MODE itself; the
    fixture's setenv restores it afterwards)."""
    from anomaly.loggers import build_loggers, close_loggers

    monkeypatch.setenv("WANDB_MODE", "online")
    cfg = compose_config(tmp_path, [*TINY, "logger=wandb", "logger.wandb.offline=true"])
    loggers = build_loggers(cfg.logger, {"name": "x", "tags": ["t"]})
    try:
        assert loggers[0].experiment.offline and loggers[0].experiment.name == "x"
    finally:
        close_loggers(loggers)
    assert len(offline_runs(tmp_path)) == 1


def test_run_names():
    assert run_name("gpnd", "mnist", GPNDFolds(normal=[3], fold=0), 1) == "gpnd-mnist-gpnd_folds-n3-f0-s1"
    assert run_name("gpnd", "mnist", GPNDFolds(anomalous=[3, 5], fold=2), 0) == "gpnd-mnist-gpnd_folds-a3_5-f2-s0"
    # the protocol's default classes: holdout_class has class 0 anomalous, one_class normal
    assert run_name("adae", "mnist", HoldoutClass(), 0) == "adae-mnist-holdout_class-a0-s0"
    assert run_name("ae", "fashion_mnist", OneClass(normal=["T-shirt/top"]), 4) == \
        "ae-fashion_mnist-one_class-nT-shirttop-s4"


def test_sweep_group_is_the_sweep_dir(tmp_path):
    from anomaly.loggers import sweep_group

    compose_config(tmp_path, ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}/multirun/ae/digits/t0"])
    assert sweep_group(tmp_path) == "multirun/ae/digits/t0"
    assert sweep_group(tmp_path / "elsewhere") == "t0"
    compose_config(tmp_path, [])  # a single run
    assert sweep_group(tmp_path) is None


def test_plots_go_to_loggers_that_take_images(tmp_path):
    """A TensorBoard-style logger (experiment.add_image) gets the PNGs as HWC RGB arrays; a logger
    without images (CSV) is left alone. (TensorBoard itself is not installed here.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from types import SimpleNamespace

    from anomaly.loggers import log_artifacts

    for name in ("roc.png", "score_hist.png"):
        fig, ax = plt.subplots(figsize=(1, 2), dpi=20)
        fig.savefig(tmp_path / name)
        plt.close(fig)
    calls = []
    writer = SimpleNamespace(add_image=lambda tag, img, global_step, dataformats: calls.append(
        (tag, img.shape, global_step, dataformats)))
    csv_like = SimpleNamespace(experiment=SimpleNamespace())
    log_artifacts([SimpleNamespace(experiment=writer), csv_like], {"status": "ok"}, tmp_path, step=7)
    assert sorted(calls) == [("test/roc", (40, 20, 3), 7, "HWC"), ("test/score_hist", (40, 20, 3), 7, "HWC")]


@pytest.mark.slow
def test_a_reproduced_table_logs_its_comparison_to_the_tables_group(tmp_path, wandb_offline, every_dataset_root):
    from anomaly.reproduce.cli import load_tables
    from tests.test_reproduce import QUIET, first_training, run_app

    table = load_tables("adae_mnist")[0]
    results = run_app(tmp_path, ["table=adae_mnist", "budget=smoke", *first_training(table), *QUIET, "logger=wandb",
                                 f"paths.data_dir={every_dataset_root}", "dataset.loader.download=false"])
    assert results and all(r["status"] == "ok" for r in results)
    runs = [read_run(p) for p in sorted(tmp_path.rglob("offline-run-*/run-*.wandb"))]
    cells = [r for r in runs if "comparison" not in r.tags]
    (comparison,) = [r for r in runs if "comparison" in r.tags]
    assert cells and {r.group for r in cells} == {"adae_mnist/smoke"}  # the cells, grouped by table
    assert comparison.group == "adae_mnist/smoke" and comparison.name == "adae_mnist-smoke-comparison"
    summary = comparison.summary  # (the offline log flattens a logged object's fields into keys)
    assert summary["comparison/table/_type"] == "table-file"
    assert summary["comparison/table/nrows"] == len(results) and summary["comparison/table/ncols"] == 5  # epochs too
    # ours vs the paper, drawn as the report draws it
    (figure,) = [k for k in summary if k.startswith("comparison/paper_auroc_adae_mnist_budget_smoke_debug")
                 and k.endswith("/_type")]
    assert summary[figure] == "image-file"

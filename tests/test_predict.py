"""Labelling images of no split with a trained model: `AnomalyModule.predict` / `predict_step`
and `python -m anomaly.evaluate ckpt_path=… predict_dir=…` (predictions.csv)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly import AnomalyError
from anomaly.pipeline import build_datamodule, train
from anomaly.rescore import evaluate
from tests.conftest import TINY, compose_config
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny AE run on scikit-learn's digits (16×16 grayscale): its dir, results and model."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config(run_dir, [*TINY, "trainer.max_epochs=2"])
    keep: dict = {}
    results = train(cfg, keep=keep)
    return run_dir, results, keep["model"], cfg


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_predict_labels_at_the_fitted_threshold(trained):
    _, results, model, cfg = trained
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    images = dm.data.images[:20]
    threshold = results["metrics"]["threshold"]
    assert float(model.threshold) == threshold
    labels = model.predict(images)
    model.eval()
    with torch.no_grad():
        scores = model.score(model.to_value_range(images)).double()
    assert labels.dtype == torch.bool and torch.equal(labels, scores > threshold)
    out = model.predict_step({"image": images.clone(), "index": torch.arange(20)}, 0)
    assert torch.equal(out["anomalous"].cpu(), labels)  # a uint8 batch is scaled as predict's


@pytest.mark.slow
def test_evaluate_writes_predictions_for_a_folder(tmp_path, trained):
    run_dir, results, _, cfg = trained
    scores = np.load(run_dir / "scores.npz")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    # test images of the run, as the run's dataset holds them (16×16 after its resize), and two
    # images of no dataset: RGB of another size (made grayscale, resized) in a subfolder
    folder = tmp_path / "images"
    picked = scores["index"][:4]
    for n, index in enumerate(picked):
        write_png(folder / f"test_{n}.png", dm.data.images[index, 0].numpy())
    rng = np.random.default_rng(0)
    write_png(folder / "other" / "noise.png", rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    write_png(folder / "other" / "white.png", np.full((16, 16), 255, dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = evaluate(compose_config(tmp_path / "predict", [f"ckpt_path={ckpt}", f"predict_dir={folder}",
                                                         "trainer.enable_progress_bar=false"],
                                  config_name="evaluate"))
    rows = read_rows(tmp_path / "predict" / "predictions.csv")
    assert [r["file"] for r in rows] == ["other/noise.png", "other/white.png",
                                         *(f"test_{n}.png" for n in range(4))]
    threshold = json.loads((run_dir / "results.json").read_text())["metrics"]["threshold"]
    for row in rows:
        assert row["anomalous"] == str(int(float(row["score"]) > threshold)), row
    # the run's own test images get the scores its test gave them
    by_file = {r["file"]: float(r["score"]) for r in rows}
    for n, index in enumerate(picked):
        expected = scores["scores"][list(scores["index"]).index(index)]
        assert by_file[f"test_{n}.png"] == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    assert out["images"] == 6 and out["anomalous"] == sum(r["anomalous"] == "1" for r in rows)
    assert out["threshold"] == threshold
    assert not (tmp_path / "predict" / "results.json").exists()  # the test split was not re-scored


@pytest.mark.slow
@pytest.mark.parametrize("make, says", [
    (lambda p: p / "nowhere", "no such folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no image files"),
])
def test_missing_or_empty_folder_is_one_error(tmp_path, trained, make, says):
    run_dir = trained[0]
    folder = make(tmp_path)
    cfg = compose_config(tmp_path / "predict", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                                f"predict_dir={folder}"], config_name="evaluate")
    with pytest.raises(AnomalyError, match=f"predict_dir={folder}: {says}"):
        evaluate(cfg)


@pytest.mark.slow
def test_cli_empty_folder_exits_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli.run("anomaly.evaluate", [f"ckpt_path={tmp_path / 'x.ckpt'}", f"predict_dir={tmp_path / 'empty'}",
                                        f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert lines == [f"error: predict_dir={tmp_path / 'empty'}: no image files (.png, .jpg, .jpeg, .bmp, "
                     ".tif, .tiff) in it or its subfolders"], proc.stderr[-2000:]


@pytest.mark.slow
def test_an_evaluate_sweep_goes_on_past_a_failing_checkpoint(tmp_path, trained):
    good = trained[0] / "checkpoints" / "last.ckpt"
    proc = cli.run("anomaly.evaluate", ["-m", f"ckpt_path={tmp_path / 'x.ckpt'},{good}",
                                        f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}"],
                   cwd=tmp_path)
    assert proc.returncode != 0, proc.stderr[-2000:]  # the sweep ends non-zero: one job failed
    jobs = [json.loads((tmp_path / "sweep" / str(n) / "results.json").read_text()) for n in (0, 1)]
    assert jobs[0]["status"] == "failed" and "x.ckpt" in jobs[0]["problem"]
    assert jobs[1]["status"] == "ok" and jobs[1]["metrics"]["auroc"] == trained[1]["metrics"]["auroc"]


@pytest.mark.slow
def test_importing_the_library_leaves_warning_filters_alone():
    """Only the entry points install warning filters (anomaly.runlog.install_warning_filters).
    Third-party packages install their own on import: they are imported first, in the order
    anomaly.pipeline imports them, so what changes after is anomaly's doing."""
    code = """
import importlib, sys, warnings
deps = sys.argv[1].split(",")
for name in deps:
    try:
        importlib.import_module(name)
    except Exception:
        pass
before = list(warnings.filters)
import anomaly.pipeline, anomaly.checkpoints, anomaly.console, anomaly.config, anomaly.loggers, anomaly.sweep
import anomaly.methods.ocsvm
added = [f for f in warnings.filters if f not in before]
assert warnings.filters == before, added
from anomaly import runlog
runlog.install_warning_filters()
assert all(any(f[1] is not None and f[1].pattern == m for f in warnings.filters) for m in runlog.QUIET_WARNINGS)
print("ok")
"""
    # (fresh processes: forks of tests.helpers.cli's server, which imported third-party modules only)
    listing = cli.run("-c", ["import sys; import anomaly.pipeline, anomaly.sweep, anomaly.methods.ocsvm; "
                             "print(','.join(m for m in sys.modules if m.split('.')[0] not in ('anomaly', '__main__')))"],
                      cwd=ROOT)
    assert listing.returncode == 0, listing.stderr[-2000:]
    proc = cli.run("-c", [code, listing.stdout.strip()], cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

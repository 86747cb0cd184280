"""End to end: compose the real config, train on generated MNIST-format files, check results."""

import json

import numpy as np
import pytest

from anomaly import AnomalyError
from anomaly.pipeline import train
from anomaly.rescore import evaluate
from tests.conftest import TINY, compose_config
from tests.helpers.runs import AUROC_FLOOR, mnist_run

# every method's separation, evaluate, checkpoint refusal and determinism: tests/test_method_contract.py


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["one_class", "anomaly_ratio"])
def test_ae_separates_easy_anomalies(tmp_path, mnist_root, protocol):
    # the figures on one protocol, and plots=false (TINY's) leaving them out on the other
    plots = protocol == "one_class"
    cfg = mnist_run(tmp_path, mnist_root, "trainer.max_epochs=12", f"protocol={protocol}", "protocol.normal=[5]",
                    f"plots={str(plots).lower()}")
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == "ae" and results["dataset"] == "mnist"
    assert results["protocol"]["name"] == protocol and results["protocol"]["normal"] == ["5"]
    m = results["metrics"]
    assert m["auroc"] > AUROC_FLOOR, m
    assert 0 < m["f1"] <= 1 and np.isfinite(m["threshold"])

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["metrics"] == pytest.approx(m)
    for key in ("auroc", "aupr_in", "aupr_out", "f1", "f1_inlier", "fpr95", "precision", "recall", "threshold"):
        assert key in on_disk["metrics"]
    for key in ("train_seconds", "score_seconds", "config_hash", "split_sizes", "seed"):
        assert key in on_disk
    sizes = on_disk["split_sizes"]
    scores = np.load(tmp_path / "scores.npz")
    assert len(scores["scores"]) == len(scores["anomalous"]) == len(scores["labels"]) == sizes["test"]
    assert int(scores["anomalous"].sum()) == sizes["test_anomalies"]
    assert np.array_equal(scores["anomalous"].astype(bool), scores["labels"] != 5)
    split = np.load(tmp_path / "split.npz")
    assert np.array_equal(np.sort(split["test"]), np.sort(scores["index"]))
    if protocol == "one_class":
        assert sizes["test"] == 400 and sizes["test_anomalies"] == 360 and sizes["train"] == 90
    else:
        assert sizes["train"] == 84 and sizes["test_anomalies"] == int(28 * 0.1 / 0.9)
    for name in ("checkpoints/last.ckpt", "config_tree.log"):
        assert (tmp_path / name).is_file(), name
    for name in ("roc.png", "score_hist.png", "examples.png"):
        assert (tmp_path / name).is_file() == plots, name


@pytest.mark.slow
def test_another_seed_other_numbers(tmp_path):
    # (the same seed, the same numbers: tests/test_method_contract.py, for every method)
    a = train(compose_config(tmp_path / "a", [*TINY, "trainer.max_epochs=2", "seed=3"]))
    c = train(compose_config(tmp_path / "c", [*TINY, "trainer.max_epochs=2", "seed=4"]))
    assert c["metrics"] != a["metrics"]


@pytest.mark.slow
def test_denoising_variant_and_debug_config_run(tmp_path):
    results = train(compose_config(tmp_path, [*TINY, "debug=fast", "method.noise_std=0.3",
                                              "protocol=anomaly_ratio", "protocol.anomaly_ratio=0.3"]))
    assert results["status"] == "ok" and results["epochs"] == 1


@pytest.mark.slow
def test_a_number_that_cannot_be_right_is_flagged_and_kept(tmp_path, monkeypatch):
    from anomaly.methods.ae import Autoencoder

    score = Autoencoder.score
    monkeypatch.setattr(Autoencoder, "score", lambda self, x: -score(self, x))  # anomalies ranked lowest
    results = train(compose_config(tmp_path, [*TINY, "debug=fast"]))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["metrics"]["auroc"] < 0.5  # kept as it is
    assert [flag["id"] for flag in on_disk["suspect"]] == ["auroc_below_chance"]
    assert on_disk["suspect"] == results["suspect"]


def test_not_a_checkpoint_is_refused(tmp_path):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"this is not a checkpoint")
    cfg = compose_config(tmp_path / "eval", [f"ckpt_path={bogus}"], config_name="evaluate")
    with pytest.raises(AnomalyError, match="is not a readable checkpoint"):
        evaluate(cfg)


def test_image_size_the_nets_cannot_take(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "dataset.image_size=12"])
    with pytest.raises(AnomalyError, match=r"image size 12 does not fit.*\(8, 16, 32, 64"):
        train(cfg)

"""End to end: compose the real config, train on generated MNIST-format files, check results."""

import json

import numpy as np
import pytest
import torch

from anomaly import AnomalyError
from anomaly.pipeline import evaluate, train
from tests.conftest import TINY, compose_config

# The synthetic classes differ by where their bright patch sits; a model that learned the normal
# class at all separates them almost perfectly, and chance is 0.5. 0.9 leaves room for the tiny
# training budget while still failing any model that did not learn.
AUROC_FLOOR = 0.9


def mnist_run(tmp_path, mnist_root, extra=()):
    return compose_config(tmp_path, [*TINY, "dataset=mnist", f"paths.data_dir={mnist_root}",
                                     "dataset.loader.download=false", "dataset.image_size=16",
                                     "trainer.max_epochs=12", *extra])


@pytest.mark.parametrize("protocol", ["one_class", "anomaly_ratio"])
def test_ae_separates_easy_anomalies(tmp_path, mnist_root, protocol):
    cfg = mnist_run(tmp_path, mnist_root, [f"protocol={protocol}", "protocol.normal=[5]"])
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
    for name in ("roc.png", "score_hist.png", "examples.png", "checkpoints/last.ckpt", "config_tree.log"):
        assert (tmp_path / name).is_file(), name


def test_evaluate_reproduces_test_metrics_from_checkpoint(tmp_path, mnist_root):
    results = train(mnist_run(tmp_path / "run", mnist_root, ["trainer.max_epochs=3"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config(tmp_path / "eval", [f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false",
                                             "method=ae"], config_name="evaluate")
    again = evaluate(cfg)
    assert again["metrics"] == pytest.approx(results["metrics"], abs=1e-6)
    assert np.allclose(np.load(tmp_path / "eval" / "scores.npz")["scores"],
                       np.load(tmp_path / "run" / "scores.npz")["scores"], atol=1e-6)


def test_same_seed_same_numbers_on_cpu(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=2", "seed=3"]
    a = train(compose_config(tmp_path / "a", overrides))
    b = train(compose_config(tmp_path / "b", overrides))
    assert a["metrics"] == b["metrics"]
    c = train(compose_config(tmp_path / "c", [*TINY, "trainer.max_epochs=2", "seed=4"]))
    assert c["metrics"] != a["metrics"]


def test_denoising_variant_and_debug_config_run(tmp_path):
    results = train(compose_config(tmp_path, [*TINY, "debug=fast", "method.noise_std=0.3",
                                              "protocol=anomaly_ratio", "protocol.anomaly_ratio=0.3"]))
    assert results["status"] == "ok" and results["epochs"] == 1


def test_checkpoint_keeps_threshold_and_refuses_other_methods(tmp_path, mnist_root):
    train(mnist_run(tmp_path / "run", mnist_root, ["trainer.max_epochs=1"]))
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert torch.isfinite(ckpt["state_dict"]["threshold"])
    ckpt["anomaly"]["method"] = "gpnd"
    torch.save(ckpt, tmp_path / "other.ckpt")
    cfg = compose_config(tmp_path / "eval", [f"ckpt_path={tmp_path / 'other.ckpt'}", "method=ae"],
                         config_name="evaluate")
    with pytest.raises(AnomalyError, match="holds a 'gpnd' model, not 'ae'"):
        evaluate(cfg)
    # resuming training from it is refused too, before any training
    cfg = mnist_run(tmp_path / "resume", mnist_root, [f"ckpt_path={tmp_path / 'other.ckpt'}"])
    with pytest.raises(AnomalyError, match="holds a 'gpnd' model, not 'ae'"):
        train(cfg)


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


# One end-to-end run per method, the same easy task for each: ARAE's "p1" with half the test
# anomalous. A method joins with one line (its name and the overrides that keep it tiny); the ae
# is covered above, the GAN methods and ARAE/ADAE by their own files' end-to-end tests.
METHODS = [
    ("vae", ["trainer.max_epochs=4"]),
    ("ocsvm", []),  # one epoch whatever max_epochs says
]


@pytest.mark.parametrize("method, overrides", METHODS, ids=[m for m, _ in METHODS])
def test_method_separates_easy_anomalies(tmp_path, mnist_root, method, overrides):
    cfg = mnist_run(tmp_path, mnist_root, [f"method={method}", "protocol=anomaly_ratio", "protocol.normal=[5]",
                                           "protocol.anomaly_ratio=0.5", *overrides])
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == method
    assert results["split_sizes"]["test_anomalies"] == results["split_sizes"]["test"] // 2
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]

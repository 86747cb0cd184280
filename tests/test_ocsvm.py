"""The One-Class SVM baseline: polarity, the torch decision function against scikit-learn's,
persistence without pickle, γ selection on validation, end to end."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.svm import OneClassSVM as SkOneClassSVM

from anomaly import AnomalyError
from anomaly.methods.ocsvm import OneClassSVM, rbf_decision
from anomaly.checkpoints import load_checkpoint
from anomaly.pipeline import build_datamodule, train
from tests.conftest import refusal
from tests.helpers.runs import AUROC_FLOOR, mnist_run


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        yield


def normal_images(n=60, seed=0):
    """The normal class: a square of varying brightness in the top-left corner, on noise."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, :4, :4] += 0.5 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    return x


def fitted(nu=0.1, gamma=0.1, n=60):  # γ near scikit-learn's "scale" (0.18) for these images
    model = OneClassSVM([1, 8, 8], nu=nu, gammas=[gamma])
    train = normal_images(n).flatten(1).double().numpy()
    model._keep_svm(model._fit(train, gamma))
    return model.eval(), train


def test_the_svm_flags_an_obvious_outlier_as_anomalous():
    nu = 0.1
    model, train = fitted(nu=nu)
    normals = normal_images(20, seed=1)
    outlier = torch.zeros(1, 1, 8, 8)
    outlier[:, :, 4:, 4:] = 0.8  # the square in the opposite corner
    normal_scores, outlier_score = model.score(normals), model.score(outlier)
    # higher = more anomalous: the outlier is outside the SVM's region (decision < 0 → score > 0),
    # far above every normal image (the published comparison inverted this), most of which are
    # inside it (score < 0)
    assert outlier_score.item() > 1.0
    assert outlier_score.item() > 10 * normal_scores.abs().max().item()
    assert (normal_scores < 0).float().mean().item() > 0.6
    # ν bounds the share of training images outside the region (beyond libsvm's tolerance)
    train_scores = model.score(torch.from_numpy(train))
    assert (train_scores > 1e-3).float().mean().item() <= nu + 1 / len(train)


@pytest.mark.parametrize("gamma", [0.5, 0.05, 1e-3])
def test_torch_decision_function_is_scikit_learns(gamma):
    rng = np.random.default_rng(0)
    train, test = rng.random((80, 64)), rng.random((30, 64))
    svm = SkOneClassSVM(kernel="rbf", nu=0.2, gamma=gamma).fit(train)
    ours = rbf_decision(torch.from_numpy(test), torch.from_numpy(svm.support_vectors_),
                        torch.from_numpy(svm.dual_coef_[0]), torch.tensor(svm.intercept_[0]),
                        torch.tensor(gamma))
    # to libsvm's rounding (it sums the kernel terms in another order)
    assert np.allclose(ours.numpy(), svm.decision_function(test), rtol=1e-6, atol=1e-7)


def test_fitted_svm_round_trips_through_a_weights_only_checkpoint(tmp_path):
    model, _ = fitted()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "svm.ckpt")
    state = torch.load(tmp_path / "svm.ckpt", weights_only=True)["state_dict"]
    fresh = OneClassSVM([1, 8, 8])
    assert not fresh.fitted
    with pytest.raises(AnomalyError, match="not fitted yet"):
        fresh.score(normal_images(2))
    fresh.load_state_dict(state)
    x = normal_images(10, seed=2)
    assert fresh.support_vectors.shape == model.support_vectors.shape
    assert torch.equal(fresh.score(x), model.score(x))


@pytest.mark.parametrize("override, message", [
    ("method.nu=0", "method.nu=0: must be a number in (0, 1]"),
    ("method.gammas=[auto]", "method.gammas=['auto']: must be a non-empty list of numbers > 0 or scale"),
    ("method.gammas=[]", "method.gammas=[]: must be a non-empty list of numbers > 0 or scale"),
    ("method.max_train=1", "method.max_train=1: must be an integer ≥ 2, or null (all training images)"),
])
def test_bad_settings_are_refused(tmp_path, override, message):
    assert refusal(tmp_path, ["method=ocsvm", override]) == message


def ocsvm_run(tmp_path, mnist_root, *extra):
    return mnist_run(tmp_path, mnist_root, "method=ocsvm", "protocol=one_class", "protocol.normal=[5]", *extra)


# (its separation, evaluate from the checkpoint's tensors alone, determinism: tests/test_method_contract.py)
@pytest.mark.slow
def test_ocsvm_end_to_end_one_epoch_gamma_from_validation(tmp_path, mnist_root):
    # max_epochs=7 asked: the SVM fits once, in one epoch
    cfg = ocsvm_run(tmp_path / "run", mnist_root, "trainer.max_epochs=7", "method.gammas=[0.5,0.05,0.005]")
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == "ocsvm" and results["epochs"] == 1
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")  # weights_only=True
    state = ckpt["state_dict"]
    assert float(state["gamma"]) in (0.5, 0.05, 0.005) and len(state["support_vectors"]) > 0
    assert state["support_vectors"].shape[1] == 16 * 16
    # γ is the grid's best on validation AUROC (the first of equals), by scikit-learn itself
    dm = build_datamodule(cfg)
    dm.setup()
    pixels = lambda idx: (dm.data.images[torch.from_numpy(idx)].float() / 255).flatten(1).double().numpy()  # noqa: E731
    val_auroc = [roc_auc_score(dm.split.val_anomalous, -SkOneClassSVM(nu=0.1, gamma=g).fit(pixels(dm.split.train))
                               .decision_function(pixels(dm.split.val))) for g in (0.5, 0.05, 0.005)]
    assert float(state["gamma"]) == (0.5, 0.05, 0.005)[int(np.argmax(val_auroc))]
    # a choice made with labelled anomalies says so (the leaderboard shows such a row apart)
    assert results["labelled_selection"].startswith(f"γ = {float(state['gamma'])} chosen from [0.5, 0.05, 0.005]")


@pytest.mark.slow
def test_the_default_ocsvm_never_reads_a_validation_label(tmp_path, mnist_root, monkeypatch):
    """By default the SVM sees its normal training images and nothing else, as the deep methods
    do: its fit never asks for the labelled validation images, and validation labels that change
    the tuned variant's choice (no image labelled anomalous: it falls back to scale) leave the
    default's γ and support vectors as they were."""
    from anomaly.data.datamodule import AnomalyDataModule

    asked = []
    read_labels = OneClassSVM._validation_images
    monkeypatch.setattr(OneClassSVM, "_validation_images", lambda self: asked.append(1) or read_labels(self))
    setup = AnomalyDataModule.setup

    def setup_without_labels(self, stage=None):
        fresh = self.split is None
        setup(self, stage)
        if fresh and self.hide_labels:
            self.split.val_anomalous = np.zeros_like(self.split.val_anomalous)

    monkeypatch.setattr(AnomalyDataModule, "setup", setup_without_labels)
    fits = {}
    # every γ separates these generated digits: with the labels the grid's first wins, without
    # them the tuned variant falls back to scale
    grids = {"ocsvm": [], "ocsvm_tuned": ["method.gammas=[3.0,scale]"]}
    for method in ("ocsvm", "ocsvm_tuned"):
        for hide in (False, True):
            monkeypatch.setattr(AnomalyDataModule, "hide_labels", hide, raising=False)
            run_dir = tmp_path / f"{method}-{hide}"
            results = train(mnist_run(run_dir, mnist_root, f"method={method}", "protocol=one_class",
                                      "protocol.normal=[5]", *grids[method]))
            assert results["status"] == "ok"
            # a choice made with labels says so (none was made without them)
            assert (results.get("labelled_selection") is None) == (method == "ocsvm" or hide)
            fits[method, hide] = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
        if method == "ocsvm":
            assert asked == []  # the fit never asked for the labelled validation images
    assert asked  # the tuned variant did
    assert float(fits["ocsvm_tuned", False]["gamma"]) != float(fits["ocsvm_tuned", True]["gamma"])
    assert float(fits["ocsvm", False]["gamma"]) == float(fits["ocsvm", True]["gamma"])
    assert torch.equal(fits["ocsvm", False]["support_vectors"], fits["ocsvm", True]["support_vectors"])

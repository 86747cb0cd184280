"""The contract every method keeps, checked for every file in conf/method/ (a new method is
checked without an edit here): trained tiny on the generated MNIST files, it

- separates an easy anomaly (test AUROC above `AUROC_FLOOR`);
- re-scores to the same metrics and scores through `anomaly.evaluate` with its checkpoint;
- refuses another method's checkpoint (evaluate and resume);
- gives the same metrics and scores twice for one seed;
- stops on a non-finite loss (its networks poisoned with NaN mid-epoch), unless it has no
  trainable parameters (nothing trained by gradient, e.g. the One-Class SVM: no loss to diverge).

What keeps a method tiny (image size, widths, epochs, search steps…) lives beside it, in its
config file as a comment that no run reads: the `# tiny:` lines of conf/method/<method>.yaml, Hydra
overrides applied after the contract's own. Each method trains once for the first three checks
(a module-scoped fixture); the determinism and divergence runs are a few steps each.
"""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from anomaly import AnomalyError
from anomaly.pipeline import build_datamodule, build_method, train
from anomaly.rescore import evaluate
from tests.conftest import CONF_DIR, compose_config
from tests.helpers.runs import AUROC_FLOOR, mnist_run

pytestmark = pytest.mark.slow

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))

# The easy anomaly: normal digit 5 against the others, half the test set anomalous (28 + 28
# images). No paper settings: only the method's tiny overrides change its defaults.
CONTRACT = ["~paper", "protocol=anomaly_ratio", "protocol.normal=[5]", "protocol.anomaly_ratio=0.5",
            "logger=none"]


def tiny_overrides(method: str) -> list[str]:
    """The overrides of the method's `# tiny:` comment lines (joined; none may be empty)."""
    path = CONF_DIR / "method" / f"{method}.yaml"
    lines = re.findall(r"^# tiny:(.*)$", path.read_text(), flags=re.MULTILINE)
    if not lines:
        pytest.fail(f"{path} has no '# tiny:' line: add one with the overrides that train it in seconds on "
                    "16×16 images (it may be empty)")
    return " ".join(lines).split()


def run_config(tmp_path: Path, mnist_root: Path, method: str, *extra: str):
    return mnist_run(tmp_path, mnist_root, f"method={method}", *CONTRACT, *tiny_overrides(method), *extra)


def method_class_name(method: str) -> str:
    """The name a method's checkpoints carry (its class's `name`)."""
    node = OmegaConf.load(CONF_DIR / "method" / f"{method}.yaml")
    while "_target_" not in node:  # a variant that extends another config of conf/method/ (ocsvm_tuned)
        node = OmegaConf.load(CONF_DIR / "method" / f"{node.defaults[0]}.yaml")
    return hydra.utils.get_class(node._target_).name


def scores(run_dir: Path) -> np.ndarray:
    return np.load(run_dir / "scores.npz")["scores"]


@pytest.fixture(scope="module", params=METHODS)
def trained(request, tmp_path_factory, mnist_root):
    """(method, results, run dir) of one tiny training run per method, shared by the checks."""
    method = request.param
    run_dir = tmp_path_factory.mktemp(f"contract_{method}")
    results = train(run_config(run_dir, mnist_root, method))
    return method, results, run_dir


def test_separates_an_easy_anomaly(trained):
    method, results, run_dir = trained
    assert results["status"] == "ok" and results["method"] == method_class_name(method)
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_evaluate_rescores_to_the_same_metrics(trained, tmp_path):
    method, results, run_dir = trained
    cfg = compose_config(tmp_path, [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                    "trainer.enable_progress_bar=false", f"method={method}"], config_name="evaluate")
    again = evaluate(cfg)
    assert again["status"] == "ok"
    # scoring is seeded where it draws (AnoGAN's latent search): equal to float rounding
    assert again["metrics"] == pytest.approx(results["metrics"], rel=1e-5, abs=1e-6)
    assert np.allclose(scores(tmp_path), scores(run_dir), rtol=1e-5, atol=1e-6)


def test_refuses_another_methods_checkpoint(trained, tmp_path, mnist_root):
    method, results, run_dir = trained
    name = results["method"]
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    at = METHODS.index(method)  # the next config of another method (a variant of this one is not)
    other = next(m for m in METHODS[at + 1:] + METHODS[:at] if method_class_name(m) != name)
    other_name = method_class_name(other)
    # evaluate told to expect the other method
    cfg = compose_config(tmp_path / "eval", [f"ckpt_path={ckpt_path}", f"method={other}"], config_name="evaluate")
    with pytest.raises(AnomalyError, match=rf"holds a '{name}' model, not '{other_name}'"):
        evaluate(cfg)
    # training this method from the other method's checkpoint (this one, relabelled), refused
    # before any training
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["anomaly"]["method"] = other_name
    torch.save(ckpt, tmp_path / "other.ckpt")
    cfg = run_config(tmp_path / "resume", mnist_root, method, f"ckpt_path={tmp_path / 'other.ckpt'}")
    with pytest.raises(AnomalyError, match=rf"holds a '{other_name}' model, not '{name}'"):
        train(cfg)
    assert not (tmp_path / "resume" / "results.json").exists()


# a few optimiser steps: the determinism and divergence runs need no more
FEW_STEPS = ["+trainer.max_steps=2"]


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_metrics(tmp_path, mnist_root, method):
    a = train(run_config(tmp_path / "a", mnist_root, method, *FEW_STEPS, "seed=3"))
    b = train(run_config(tmp_path / "b", mnist_root, method, *FEW_STEPS, "seed=3"))
    assert a["status"] == "ok" and a["metrics"] == b["metrics"]
    assert np.array_equal(scores(tmp_path / "a"), scores(tmp_path / "b"))


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_loss_stops_the_run(tmp_path, mnist_root, method):
    cfg = run_config(tmp_path / "plain", mnist_root, method)
    dm = build_datamodule(cfg)
    dm.setup()
    model = build_method(cfg, dm)
    if not any(p.requires_grad for p in model.parameters()):
        pytest.skip(f"method={method} has no trainable parameters: no loss to diverge")
    # its networks diverged at batch 1 (NaN weights): the loss, or the method's own code, shows it
    cfg = run_config(tmp_path / "run", mnist_root, method, "+callbacks.fault._target_=tests.helpers.faults.PoisonWeights")
    with pytest.raises(AnomalyError, match=rf"^method={model.name}: non-finite (training loss|weights) at epoch 0, "
                                           r"batch 1 \(global step \d+\): .+; the training diverged: lower the "
                                           r"learning rate"):
        train(cfg)
    assert not (tmp_path / "run" / "results.json").exists()  # no metrics of a diverged model

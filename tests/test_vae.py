"""The VAE: reparametrisation, loss, networks sized from the image, scores, end to end with the
contaminated protocol and its contamination_quantile threshold."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomaly import AnomalyError
from anomaly.evaluation.thresholds import ContaminationQuantile
from anomaly.methods.vae import VAE, kl_divergence, reconstruction_bce, reparametrise
from anomaly.nets.vae import pooled_sides
from anomaly.checkpoints import load_checkpoint
from anomaly.pipeline import build_datamodule, train
from tests.conftest import compose_config, refusal
from tests.helpers.runs import AUROC_FLOOR, mnist_run


pytestmark = pytest.mark.usefixtures("seeded_quiet")


def test_reparametrisation_has_variance_exp_log_var():
    n = 200_000
    mean = torch.tensor([0.5, -2.0, 0.0]).expand(n, 3)
    log_var = torch.log(torch.tensor([4.0, 0.25, 1.0])).expand(n, 3)
    z = reparametrise(mean, log_var)
    assert torch.allclose(z.mean(0), torch.tensor([0.5, -2.0, 0.0]), atol=0.02)
    # σ² = exp(log σ²): 4, 0.25, 1 (the published exp(log σ²)·ε would give 16, 0.0625, 1)
    assert torch.allclose(z.var(0), torch.tensor([4.0, 0.25, 1.0]), rtol=0.02)


def test_loss_terms_on_a_hand_example():
    # KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²) per dimension, summed
    mean, log_var = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    expected_kl = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 2 - 1 - math.log(2))
    assert kl_divergence(mean, log_var).item() == pytest.approx(expected_kl)
    # BCE summed over pixels: x = (1, 0) against p = (0.8, 0.25)
    logits = torch.logit(torch.tensor([[0.8, 0.25]]))
    expected_bce = -math.log(0.8) - math.log(0.75)
    assert reconstruction_bce(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(expected_bce)


@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_training_loss_is_pixels_times_bce_plus_kl_plus_l2(l2):
    model = VAE([1, 16, 16], latent_dim=4, l2=l2)
    x = torch.rand(5, 1, 16, 16)
    torch.manual_seed(1)
    loss = model.training_step({"image": x}, 0)
    torch.manual_seed(1)  # the same ε
    logits, mean, log_var = model(x)
    pixels = 16 * 16
    expected = (pixels * F.binary_cross_entropy(torch.sigmoid(logits), x)
                + kl_divergence(mean, log_var).mean())
    weights = list(model.regularised_weights())
    expected = expected + l2 * sum(w.pow(2).sum() for w in weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # the published regularised layers: not the first conv, μ, log σ² or the last two convs
    assert not any(w is model.encoder.stem[0].weight or w is model.encoder.mean.weight
                   or w is model.encoder.log_var.weight for w in weights)
    merge_convs = [m for m in model.decoder.merge if isinstance(m, torch.nn.Conv2d)]
    assert not any(w is m.weight for m in merge_convs for w in weights)


@pytest.mark.parametrize("shape, sides", [((1, 16, 16), [16, 8, 4]), ((1, 28, 28), [28, 14, 7, 4]),
                                          ((1, 32, 32), [32, 16, 8, 4]), ((3, 64, 64), [64, 32, 16, 8, 4])])
def test_networks_are_sized_from_the_image(shape, sides):
    assert pooled_sides(shape[-1]) == sides
    model = VAE(list(shape), latent_dim=8).eval()
    x = torch.rand(2, *shape)
    logits, mean, log_var = model(x)
    assert logits.shape == x.shape and mean.shape == log_var.shape == (2, 8)
    assert model.reconstruct(x).shape == x.shape and 0 <= model.reconstruct(x).min()
    # the two encoder branches: one max-pooling, one average-pooling, concatenated
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.encoder.max_branch) == len(sides) - 1
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in model.encoder.avg_branch) == len(sides) - 1
    dense = model.encoder.dense
    assert dense.in_features == 2 * 16 * sides[-1] ** 2 and dense.out_features == 128


def test_scores_mse_elbo_and_sampling():
    model = VAE([1, 16, 16], latent_dim=4).eval()
    x = torch.rand(6, 1, 16, 16)
    with torch.no_grad():
        mse = model.score(x)
        assert torch.allclose(mse, (model.reconstruct(x) - x).pow(2).flatten(1).mean(1))
        assert torch.equal(mse, model.score(x))  # z = μ: deterministic
        model.score_kind = "elbo"
        mean, log_var = model.encoder(x)
        expected = reconstruction_bce(model.decoder(mean), x) + kl_divergence(mean, log_var)
        assert torch.allclose(model.score(x), expected)
        model.score_samples = 3
        assert not torch.equal(model.score(x), model.score(x))  # averaged draws of z


def test_optimiser_and_bad_settings(tmp_path):
    optimiser = VAE([1, 16, 16]).configure_optimizers()
    assert isinstance(optimiser, torch.optim.RMSprop)
    # Keras's RMSprop: ρ 0.9, ε 1e-7
    assert (optimiser.defaults["lr"], optimiser.defaults["alpha"], optimiser.defaults["eps"]) == (1e-3, 0.9, 1e-7)
    assert refusal(tmp_path, ["method=vae", "method.score=nll", "method.latent_dim=0"]) == \
        "method.latent_dim=0: must be an integer ≥ 1; method.score='nll': must be one of mse, elbo"
    with pytest.raises(AnomalyError, match="value_range=unit"):
        VAE([1, 16, 16], value_range="symmetric")
    with pytest.raises(AnomalyError, match="side ≥ 8, not 4"):
        VAE([1, 4, 4])


@pytest.mark.slow
def test_vae_end_to_end_contaminated_protocol_and_paper_threshold(tmp_path, mnist_root):
    # 20 % impurities in every split, training included; protocol=contamination picks the paper's
    # threshold, contamination_quantile with the protocol's contamination
    cfg = mnist_run(tmp_path, mnist_root, "method=vae", "protocol=contamination", "protocol.normal=[5]",
                    "protocol.contamination=0.2", "trainer.max_epochs=4", "method.encoder.dropout=0.1", "method.l2=1e-5")
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == "vae"
    assert results["threshold_strategy"] == "contamination_quantile"
    sizes = results["split_sizes"]
    assert sizes["train_anomalies"] == 21 and sizes["val_anomalies"] == 4 and sizes["test_anomalies"] == 10
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]
    # the threshold is the 0.8 quantile of the training + validation scores of the final weights
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    model = VAE([1, 16, 16])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    dm = build_datamodule(cfg)
    dm.setup()
    with torch.no_grad():
        scores = torch.cat([model.score(model.to_value_range(dm.data.images[torch.from_numpy(idx)]))
                            for idx in (dm.split.train, dm.split.val)])
    assert float(model.threshold) == pytest.approx(float(torch.quantile(scores.double(), 0.8)), rel=1e-5)
    assert np.isclose(results["metrics"]["threshold"], float(model.threshold))


def test_experiment_config_composes(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=vae_mnist_contamination"])
    assert cfg.method._target_.endswith("VAE") and cfg.method.latent_dim == 32
    assert cfg.method.l2 == 1e-5 and cfg.method.encoder.dropout == cfg.method.decoder.dropout == 0.5 and cfg.data.batch_size == 128
    assert cfg.protocol._target_.endswith("Contamination")
    assert (cfg.protocol.n_train, cfg.protocol.n_val, cfg.protocol.n_test) == (4000, 800, 800)
    assert cfg.threshold._target_.endswith("ContaminationQuantile")
    assert cfg.threshold.contamination == pytest.approx(1 / 33)
    cfg = compose_config(tmp_path, ["experiment=vae_emnist"])  # the published setup itself
    assert cfg.dataset.name == "emnist_letters" and list(cfg.protocol.normal) == ["A"]
    assert cfg.protocol.n_train is None and cfg.protocol.val_fraction == pytest.approx(1 / 6)
    assert cfg.method._target_.endswith("VAE") and cfg.threshold._target_.endswith("ContaminationQuantile")

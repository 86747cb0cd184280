"""ARAE: the attacks, what a training step touches, the union variant, end to end; the DAE
baseline on ARAE's MLP."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from anomaly import AnomalyError
from anomaly.methods.arae import (ARAE, latent_shift, pgd_l2_latent, pgd_linf_latent, spatial_transforms,
                                  transform_images, worst_spatial_transform)
from anomaly.nets import ConvDecoder, ConvEncoder, DenseDecoder, DenseEncoder
from anomaly.pipeline import train
from tests.conftest import compose_config, refusal
from tests.helpers import runs
from tests.helpers.runs import AUROC_FLOOR, snapshot


pytestmark = pytest.mark.usefixtures("seeded_quiet")


NETS = {"mlp": dict(encoder=partial(DenseEncoder, hidden=[32, 16]), decoder=partial(DenseDecoder, hidden=[16, 32])),
        "conv": dict(encoder=partial(ConvEncoder, base_width=32), decoder=partial(ConvDecoder, base_width=32),
                     init="dcgan")}  # conf/net/arae/


def small_arae(net: str = "mlp", **kwargs) -> ARAE:
    defaults = dict(latent_dim=8, **NETS[net], eps=0.2, steps=5)
    return ARAE([1, 16, 16], **{**defaults, **kwargs})


# ---- networks ------------------------------------------------------------------------------------
def test_dense_autoencoder_is_the_papers_mlp():
    encoder, decoder = DenseEncoder(784), DenseDecoder(128, [1, 28, 28])
    linears = [m for m in [*encoder.net, *decoder.net] if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(784, 512), (512, 256), (256, 128), (128, 256), (256, 512), (512, 784)]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in [*encoder.net, *decoder.net]) == 6
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    # Glorot normal: std sqrt(2 / (fan_in + fan_out))
    assert linears[0].weight.std().item() == pytest.approx(math.sqrt(2 / (784 + 512)), rel=0.05)
    z = encoder(torch.rand(3, 1, 28, 28))
    assert z.shape == (3, 128) and decoder(z).shape == (3, 1, 28, 28)


# ---- (a) the L∞ attack ---------------------------------------------------------------------------
def test_linf_pgd_stays_in_the_ball_and_beats_a_random_perturbation():
    encoder = DenseEncoder(64, out_features=16, hidden=[32])
    x = torch.rand(32, 1, 8, 8)
    x[:4] = 0.0  # all on the box's edge: clipping must hold there too
    eps = 0.1
    x_adv = pgd_linf_latent(encoder, x, eps, steps=20)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    # a random corner of the same ball (the largest random L∞ perturbation), clipped the same way
    corner = (x + eps * torch.randint(0, 2, x.shape).float().mul(2).sub(1)).clamp(0, 1)
    with torch.no_grad():
        target = encoder(x)
        attacked, random = latent_shift(encoder, x_adv, target), latent_shift(encoder, corner, target)
    assert torch.all(attacked > random), (attacked, random)
    assert attacked.mean() > 5 * random.mean()


def test_l2_pgd_stays_in_the_ball_and_beats_a_random_perturbation():
    encoder = DenseEncoder(64, out_features=16, hidden=[32])
    x = torch.rand(32, 1, 8, 8)
    eps = 1.0
    x_adv = pgd_l2_latent(encoder, x, eps, steps=20, alpha=0.1)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    noise = torch.randn_like(x)
    random = (x + eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    with torch.no_grad():
        target = encoder(x)
        assert torch.all(latent_shift(encoder, x_adv, target) > latent_shift(encoder, random, target))


# ---- (b) attacks leave no parameter gradient and no mode change -------------------------------------
@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("training", [True, False])
def test_attack_leaves_no_gradients_and_keeps_modes(net, training):
    model = small_arae(net=net, attack="union", union_rotations=3, union_l2_steps=2, union_linf_steps=2)
    model.train(training)
    modes = {name: m.training for name, m in model.named_modules()}
    buffers = {name: b.clone() for name, b in model.encoder.named_buffers()}  # BN running statistics
    x = torch.rand(8, 1, 16, 16)
    model.adversarial_examples(x)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(buffers[name], b) for name, b in model.encoder.named_buffers())
    assert (len(buffers) > 0) == (net == "conv")
    # existing gradients (a step's, before the optimizer runs) are left exactly as they were
    model.score(x).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    pgd_linf_latent(model.encoder, x, 0.2, 3)
    assert all(torch.equal(grads[name], p.grad) for name, p in model.named_parameters())


# ---- (c) a training step updates encoder and decoder, all of them, with one optimizer ---------------
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_training_step_updates_every_autoencoder_parameter(net):
    model = small_arae(net=net).train()
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-3
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"encoder", "decoder"}
    before = snapshot(model)
    optimizer.zero_grad()
    loss = model.training_step({"image": torch.rand(16, 1, 16, 16)}, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(before[name], p)]
    assert unchanged == []


@pytest.mark.parametrize("attack, weight", [("linf", 0.1), ("union", 0.2)])
def test_training_loss_is_reconstruction_plus_weighted_latent_term(attack, weight):
    model = small_arae(attack=attack, union_rotations=3, union_l2_steps=2, union_linf_steps=2)
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(1)
    x_adv, x_target = model.adversarial_examples(x)
    z_adv, z_clean = model.encoder(x_adv), model.encoder(x_target)
    expected = F.mse_loss(model.decoder(z_adv), x_target) + weight * F.mse_loss(z_adv, z_clean)
    torch.manual_seed(1)  # the same random starts
    assert model.training_step({"image": x}, 0).item() == pytest.approx(expected.item(), rel=1e-5)


# ---- (d) the union variant -------------------------------------------------------------------------
def test_spatial_grid_and_warp():
    thetas = spatial_transforms(30.0, 31, 4 / 28, 3)
    assert thetas.shape == (279, 2, 3)  # the published grid
    assert any(torch.allclose(t, torch.eye(2, 3)) for t in thetas)  # the identity is a candidate
    x = torch.rand(2, 1, 5, 5)
    quarter = spatial_transforms(90.0, 3, 0.0, 1)[2]  # +90°
    assert torch.allclose(transform_images(x, quarter.expand(2, 2, 3)), torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_worst_spatial_transform_is_the_brute_force_maximum():
    encoder = DenseEncoder(144, out_features=8, hidden=[16])
    x = torch.rand(6, 1, 12, 12)
    thetas = spatial_transforms(20.0, 5, 2 / 12, 3)  # 45 transforms, in chunks of 7
    chosen = worst_spatial_transform(encoder, x, thetas, chunk=7)
    with torch.no_grad():
        target = encoder(x)
        every = torch.stack([latent_shift(encoder, transform_images(x, t.expand(6, 2, 3)), target)
                             for t in thetas], 1)
        assert torch.allclose(latent_shift(encoder, chosen, target), every.max(1).values, rtol=1e-5)


@pytest.mark.parametrize("combine", ["all", "worst"])
def test_union_training_step_runs(combine):
    model = small_arae(attack="union", union_combine=combine, union_rotations=3, union_l2_steps=3,
                       union_linf_steps=3, union_transform_chunk=4).train()
    x = torch.rand(8, 1, 16, 16)
    x_adv, x_target = model.adversarial_examples(x)
    assert len(x_adv) == len(x_target) == (24 if combine == "all" else 8)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x_target)
    optimizer = model.configure_optimizers()
    before = snapshot(model)
    loss = model.training_step({"image": x}, 0)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters())


def test_bad_settings_are_refused(tmp_path):
    assert refusal(tmp_path, ["method=arae", "method.attack=l2", "method.steps=-1"]) == \
        "method.attack='l2': must be one of linf, union; method.steps=-1: must be an integer ≥ 0"
    with pytest.raises(AnomalyError, match=r"value_range=unit"):
        small_arae(value_range="symmetric")


# ---- (e, f) end to end -------------------------------------------------------------------------------
def mnist_run(tmp_path, mnist_root, extra):
    # "p1" with half the test set anomalous (28 normal, 28 anomalous test images): enough anomalies
    # for the AUROC floor to mean something
    return runs.mnist_run(tmp_path, mnist_root, "protocol=anomaly_ratio", "protocol.normal=[5]",
                          "protocol.anomaly_ratio=0.5", "trainer.max_epochs=5", *extra)


# Measured on this data: untrained ARAE (no training batch) has AUROC 0.19, one epoch 1.0.
# The default (MLP, L∞ attack): tests/test_method_contract.py; here the other nets and attack.
@pytest.mark.slow
@pytest.mark.parametrize("variant", [
    ["net/arae@method=conv"],
    ["method.attack=union", "method.union_rotations=3", "method.union_l2_steps=3", "method.union_linf_steps=3"],
], ids=["conv", "union"])
def test_arae_end_to_end_separates_easy_anomalies(tmp_path, mnist_root, variant):
    cfg = mnist_run(tmp_path, mnist_root, ["method=arae", "method.steps=5", "threshold=f1_inlier",
                                           "plots=true", *variant])
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == "arae"
    assert results["split_sizes"]["test_anomalies"] == results["split_sizes"]["test"] // 2
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]
    assert results["threshold_strategy"] == "f1_inlier"
    assert (tmp_path / "examples.png").is_file()


@pytest.mark.slow
def test_dae_baseline_on_the_mlp_end_to_end(tmp_path, mnist_root):
    cfg = mnist_run(tmp_path, mnist_root, ["method=ae", "net/ae@method=mlp", "method.latent_dim=128",
                                           "method.noise_std=0.2"])
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == "ae"
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]


def test_experiment_configs_compose(tmp_path):
    for name, eps in (("arae_mnist", 0.2), ("arae_fashion_mnist", 0.05)):
        cfg = compose_config(tmp_path, [f"experiment={name}"])
        assert cfg.method._target_.endswith("ARAE") and cfg.method.eps == eps and cfg.method.steps == 40
        assert cfg.dataset.image_size == 28 and cfg.data.batch_size == 256
        assert cfg.protocol._target_.endswith("AnomalyRatio") and cfg.threshold.positive == "normal"  # f1_inlier

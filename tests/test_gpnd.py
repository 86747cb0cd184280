import math
from functools import partial

import numpy as np
import pytest
import torch
from scipy import stats

from anomaly.data.protocols.gpnd_folds import GPNDFolds, gpnd_folds_split
from anomaly.methods.gpnd import (GPND, encoder_jacobians, generator_jacobians, gennorm_logpdf,
                                  histogram_log_density, log_p_perp, sum_log_singular_values)
from anomaly.nets import ConvDecoder, ConvEncoder
from anomaly.pipeline import train
from tests.conftest import TINY, compose_config
from tests.helpers.runs import AUROC_FLOOR, changed_networks, snapshot

torch.manual_seed(0)


# ---- density pieces on cases with known answers ---------------------------------------------------
def test_linear_generator_jacobian_term_is_its_singular_values():
    m, n = 40, 5
    weight = torch.randn(m, n, dtype=torch.float64)
    generator = lambda z: z @ weight.T  # noqa: E731  (G(z) = W z: J_G = W everywhere)
    z = torch.randn(7, n, dtype=torch.float64)
    jac = generator_jacobians(generator, z, chunk=3)
    assert jac.shape == (7, m, n) and torch.allclose(jac, weight.expand(7, m, n))
    expected = torch.linalg.svdvals(weight).log().sum()
    assert torch.allclose(sum_log_singular_values(jac), expected.expand(7))
    # the encoder route: E = W⁺ (pseudo-inverse) has reciprocal singular values
    pinv = torch.linalg.pinv(weight)
    encoder = lambda x: x @ pinv.T  # noqa: E731
    jac_e = encoder_jacobians(encoder, torch.randn(7, m, dtype=torch.float64), chunk=4)
    assert torch.allclose(sum_log_singular_values(jac_e), -expected.expand(7))


def test_jacobians_in_chunks_are_vmaps_own_and_report_progress():
    encoder = torch.nn.Sequential(torch.nn.Linear(12, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x = torch.randn(10, 12, dtype=torch.float64)
    seen = []
    jac, out = encoder_jacobians(encoder, x, chunk=4, with_outputs=True, progress=lambda *a: seen.append(a))
    assert seen == [(4, 10), (8, 10), (10, 10)]  # a long batch tells how far it is after each chunk

    def single(xi):
        y = encoder(xi[None]).flatten()
        return y, y

    whole, whole_out = torch.func.vmap(torch.func.jacrev(single, has_aux=True), chunk_size=4)(x)
    assert torch.equal(jac, whole) and torch.equal(out, whole_out)  # the same numbers as vmap's chunks


def test_p_perp_of_an_isotropic_gaussian_is_its_density():
    # w ~ N(0, σ² I_k): r = |w| follows σ·chi(k); the GPND formula must give the Gaussian density
    k, sigma = 50, 0.3
    w = torch.randn(6, k, dtype=torch.float64) * sigma
    r = w.norm(dim=1)
    log_pr = torch.from_numpy(stats.chi.logpdf(r.numpy() / sigma, k) - math.log(sigma))
    expected = stats.multivariate_normal(np.zeros(k), sigma**2 * np.eye(k)).logpdf(w.numpy())
    assert np.allclose(log_p_perp(r, k, log_pr).numpy(), expected, rtol=1e-9)


def test_gennorm_logpdf_matches_scipy():
    beta, loc, scale = torch.tensor([0.8, 2.0, 3.5]), torch.tensor([0.1, -1.0, 0.0]), torch.tensor([1.0, 0.5, 2.0])
    x = torch.randn(10, 3, dtype=torch.float64)
    ours = gennorm_logpdf(x, beta.double(), loc.double(), scale.double())
    ref = np.stack([stats.gennorm.logpdf(x[:, i].numpy(), beta[i].item(), loc[i].item(), scale[i].item())
                    for i in range(3)], 1)
    assert np.allclose(ours.numpy(), ref)


def test_histogram_density_inside_below_and_above_range():
    edges = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    density = torch.tensor([0.25, 0.75], dtype=torch.float64)
    r = torch.tensor([1.5, 2.5, 0.5, 9.0])
    out = histogram_log_density(r, edges, density).exp()
    assert torch.allclose(out[:3], torch.tensor([0.25, 0.75, 0.125], dtype=torch.float64))
    assert out[3] < 1e-300


# ---- training updates touch only their own networks --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("reuse", [False, True])
def test_each_update_changes_only_its_own_networks(reuse):
    torch.manual_seed(0)  # not the RNG state the tests before left (an unseeded init can leave an update without effect)
    # lr 2e-4: Adam's first steps move every weight by about lr, and at 2e-3 the discriminator's
    # first step on these noise images can saturate it, leaving the generator no gradient
    model = GPND([1, 32, 32], latent_dim=8, lr=2e-4, reuse_forward_passes=reuse)
    model.train()
    model.manual_backward = lambda loss: loss.backward()  # outside a Trainer
    opt_image_d, opt_generator, opt_latent_d, opt_autoencoder = model.configure_optimizers()[0]
    x = torch.rand(16, 1, 32, 32)

    before = snapshot(model)
    _, fake = model.update_image_discriminator(x, opt_image_d)
    assert changed_networks(before, model) == {"image_discriminator"}
    image_d_grads = [p.grad.clone() for p in model.image_discriminator.parameters()]
    before = snapshot(model)
    model.update_generator(fake, opt_generator)
    assert changed_networks(before, model) == {"generator"}
    # the generator's update left no gradient in the discriminator it backpropagated through
    assert all(torch.equal(g, p.grad) for g, p in zip(image_d_grads, model.image_discriminator.parameters()))
    before = snapshot(model)
    _, z = model.update_latent_discriminator(x, opt_latent_d)
    assert changed_networks(before, model) == {"latent_discriminator"}
    latent_d_grads = [p.grad.clone() for p in model.latent_discriminator.parameters()]
    before = snapshot(model)
    model.update_autoencoder(x, z, opt_autoencoder)
    assert changed_networks(before, model) == {"encoder", "generator"}
    assert all(torch.equal(g, p.grad) for g, p in zip(latent_d_grads, model.latent_discriminator.parameters()))


# ---- the 2018 code's training settings (the defaults) and the earlier ones -------------------------
def tiny_nets(output: str = "half_tanh") -> dict:
    """GPND's default networks, narrow, for 16×16 images and a latent of 4."""
    return {"latent_dim": 4, "encoder": partial(ConvEncoder, widths=[8, 16]),
            "generator": partial(ConvDecoder, widths=[16, 8], output=output),
            "discriminator": partial(ConvEncoder, widths=[8, 16])}


def test_defaults_are_the_2018_codes_training():
    torch.manual_seed(0)
    model = GPND([1, 16, 16], **tiny_nets())
    assert (model.reconstruction_weight, model.latent_adversarial_weight) == (1.0, 2.0)
    z = torch.randn(5, 4) * 50  # far into the saturation: tanh·½+½ reaches 0 and 1
    out = model.generator.net[:-1](z[:, :, None, None])
    assert torch.allclose(model.generator(z), torch.tanh(out) * 0.5 + 0.5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    dcgan = GPND([1, 16, 16], **tiny_nets(output="sigmoid"), batchnorm_init="dcgan")
    assert not all(torch.equal(m.weight, torch.ones_like(m.weight))
                   for m in dcgan.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.allclose(dcgan.generator(z), torch.sigmoid(dcgan.generator.net[:-1](z[:, :, None, None])))


@pytest.mark.parametrize("reuse, generator_passes, encoder_passes", [(False, 3, 2), (True, 2, 1)])
def test_forward_passes_per_training_step(reuse, generator_passes, encoder_passes):
    """The published loop runs G three times per batch (G(z) for the image discriminator, a new
    G(z) for the generator, G(E(x))) and E twice; reuse_forward_passes=true runs each once less."""
    torch.manual_seed(0)
    model = GPND([1, 16, 16], **tiny_nets(), reuse_forward_passes=reuse)
    model.manual_backward = lambda loss: loss.backward()  # outside a Trainer
    optimizers = model.configure_optimizers()[0]
    model.optimizers = lambda: optimizers
    model.log_dict = model.log = lambda *a, **k: None
    calls = {"generator": 0, "encoder": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    model.training_step({"image": torch.rand(8, 1, 16, 16)}, 0)
    assert calls == {"generator": generator_passes, "encoder": encoder_passes}


# ---- batched score vs a per-sample reference -------------------------------------------------------------
def reference_scores(model: GPND, x: torch.Tensor) -> torch.Tensor:
    """One image at a time, Jacobians by autograd (rows by backward passes for the encoder, as the
    published code; torch.autograd.functional.jacobian for the generator)."""
    out = []
    for xi in x:
        xi = xi[None]
        z = model.encoder(xi)
        r = (xi - model.generator(z)).flatten().norm()
        log_pz = gennorm_logpdf(z.double(), model.latent_beta, model.latent_loc, model.latent_scale)
        log_pz = log_pz.clamp_min(math.log(1e-308)).sum()
        if model.jacobian == "generator":
            # column by column (n ≪ m): one Jacobian-vector product per latent direction, by autograd
            g = lambda v: model.generator(v[None]).flatten()  # noqa: E731
            basis = torch.eye(len(z[0]), dtype=z.dtype)
            jac = torch.stack([torch.autograd.functional.jvp(g, z[0].detach(), e)[1] for e in basis], dim=1)
            term = -torch.linalg.svdvals(jac).log().sum()
        else:
            xg = xi.detach().requires_grad_(True)
            zg = model.encoder(xg).flatten()
            rows = [torch.autograd.grad(zg[i], xg, retain_graph=True)[0].flatten() for i in range(len(zg))]
            term = torch.linalg.svdvals(torch.stack(rows)).log().sum()
        k = (xi.numel() - model.latent_dim) * model.perp_dim_factor
        log_pr = histogram_log_density(r[None], model.residual_edges, model.residual_density)[0]
        out.append(-(log_pz + term.double() + log_p_perp(r.double(), k, log_pr)))
    return torch.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize("jacobian", ["generator", "encoder"])
def test_batched_score_equals_per_sample_reference(jacobian):
    torch.manual_seed(1)
    model = GPND([1, 32, 32], latent_dim=8, jacobian=jacobian, jacobian_chunk=5, perp_dim_factor=0.2).eval()
    train_x = torch.rand(40, 1, 32, 32)
    model.prepare_scoring([{"image": train_x[:20]}, {"image": train_x[20:]}])
    assert bool(model.density_fitted) and torch.all(model.latent_scale > 0)
    x = torch.rand(12, 1, 32, 32)
    with torch.no_grad():
        batched = model.score(x).double()
    ref = reference_scores(model, x).detach()
    assert torch.allclose(batched, ref, rtol=1e-4), (batched, ref)
    model.jacobian_chunk = None  # automatic: on a CPU about 64 Jacobian rows, 8 images of latent 8
    assert model.chunk_for(x) == 8
    with torch.no_grad():
        assert torch.allclose(model.score(x).double(), batched, rtol=1e-6)


# ---- the fold protocol ------------------------------------------------------------------------------------
def test_gpnd_folds_sizes_and_ratios():
    labels = np.repeat(np.arange(10), 100)  # 100 per class → folds of 20
    for fold in range(5):
        s = gpnd_folds_split(labels, [3], fold, 0.3, seed=fold)
        assert len(s.train) == 60 and set(labels[s.train]) == {3}
        for part, anomalous in ((s.val, s.val_anomalous), (s.test, s.test_anomalous)):
            assert (~anomalous).sum() == 20 and anomalous.sum() == int(20 * 0.3 / 0.7)
        parts = [set(s.train), set(s.val), set(s.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the 5 test folds of the normal class cover it exactly once; folds do not depend on the run seed
    tests = [set(gpnd_folds_split(labels, [3], f, 0.5, seed=9).test[labels[gpnd_folds_split(labels, [3], f, 0.5, seed=9).test] == 3]) for f in range(5)]
    assert set().union(*tests) == set(np.flatnonzero(labels == 3)) and sum(map(len, tests)) == 100
    a = gpnd_folds_split(labels, [3], 2, 0.5, seed=1)
    b = gpnd_folds_split(labels, [3], 2, 0.5, seed=2)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.test, b.test)
    # validation = the next fold: its inliers are fold 3's, which is the test of fold=3
    c = gpnd_folds_split(labels, [3], 3, 0.5)
    assert set(a.val[~a.val_anomalous]) == set(c.test[~c.test_anomalous])


def test_gpnd_folds_bad_fold_and_ratio():
    from anomaly import AnomalyError

    with pytest.raises(AnomalyError, match=r"protocol.fold=5 must be one of 0…4"):
        GPNDFolds(normal=[0], fold=5)
    with pytest.raises(AnomalyError, match=r"protocol.outlier_ratio=0.0 must be in \(0, 1\)"):
        GPNDFolds(normal=[0], outlier_ratio=0.0)


# ---- end to end -------------------------------------------------------------------------------------------
# (GPND's separation at 16×16, evaluate and determinism: tests/test_method_contract.py)
@pytest.mark.slow
def test_gpnd_end_to_end_on_its_folds_protocol(tmp_path, mnist_root):
    # narrow nets at 16×16 (the contract's tiny GPND): the test is about the folds protocol's pipeline
    cfg = compose_config(tmp_path / "run", [*TINY, "method=gpnd", "method.latent_dim=8", "dataset=mnist",
                                            f"paths.data_dir={mnist_root}", "dataset.loader.download=false",
                                            "dataset.image_size=16", "method.encoder.widths=[16,32]",
                                            "method.generator.widths=[32,16]", "method.discriminator.widths=[16,32]",
                                            "protocol=gpnd_folds", "protocol.normal=[2]", "trainer.max_epochs=4"])
    results = train(cfg)
    assert results["status"] == "ok"
    assert results["metrics"]["auroc"] > AUROC_FLOOR, results["metrics"]
    assert results["split_sizes"]["test_anomalies"] == results["split_sizes"]["test"] // 2
    # the threshold follows the protocol's convention (inlier-positive F1)
    assert results["metrics"]["f1_inlier"] > 0.8


def test_the_evaluation_bar_shows_progress_within_a_long_batch(monkeypatch):
    """What report_scoring tells reaches the bar's right side, at most every refresh_seconds."""
    from types import SimpleNamespace

    from anomaly.callbacks import progress
    from anomaly.callbacks.progress import ProgressBar

    shown = []
    bar = SimpleNamespace(disable=False, set_postfix_str=lambda text, refresh: shown.append(text))
    model = GPND([1, 32, 32], latent_dim=8)
    clock = iter([0.0, 0.5, 1.2, 1.4, 2.5])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    ProgressBar(refresh_seconds=1.0)._show_scoring(model, bar)  # (at a batch's start: clock 0.0)
    for done in (4, 8, 12, 16):  # at 0.5 s, 1.2 s, 1.4 s, 2.5 s
        model.report_scoring(done, 16)
    assert shown == ["8/16 images of this batch", "16/16 images of this batch"]
    ProgressBar()._show_scoring(model, None)  # no bar (progress off): nothing is called
    model.report_scoring(1, 16)
    assert model.scoring_progress is None and len(shown) == 2

import copy
import math
from functools import partial

import pytest
import torch

from anomaly.methods.adae import ADAE
from anomaly.nets import ConvAutoencoder
from anomaly.pipeline import train
from tests.conftest import refusal
from tests.helpers.runs import changed_networks, mnist_run, snapshot


def tiny_model(**kwargs) -> ADAE:
    torch.manual_seed(0)
    net = partial(ConvAutoencoder, base_width=8, negative_slope=0.0)
    model = ADAE([1, 16, 16], latent_dim=8, generator=net, discriminator=net, lr=1e-3, **kwargs)
    model.train()
    model.manual_backward = lambda loss: loss.backward()  # outside a Trainer
    return model


def batch(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16) * 2 - 1


# ---- each update changes only its own network ---------------------------------------------------
def test_updates_change_only_their_own_network():
    model = tiny_model()
    opt_discriminator, opt_generator = model.configure_optimizers()
    x = batch()

    before = snapshot(model)
    model.update_discriminator(x, opt_discriminator)
    assert changed_networks(before, model) == {"discriminator"}
    assert all(p.grad is None for p in model.generator.parameters())  # G(x) was detached
    d_grads = [p.grad.clone() for p in model.discriminator.parameters()]

    before = snapshot(model)
    model.update_generator(x, opt_generator)
    assert changed_networks(before, model) == {"generator"}
    # the G update backpropagated through D but left no gradient in D's parameters
    assert all(torch.equal(g, p.grad) for g, p in zip(d_grads, model.discriminator.parameters()))


def test_generator_update_reusing_the_discriminator_updates_g_of_x_is_the_same_step():
    reuse = tiny_model()
    fresh = copy.deepcopy(reuse)
    x = batch()
    opts_reuse, opts_fresh = reuse.configure_optimizers(), fresh.configure_optimizers()
    _, fake = reuse.update_discriminator(x, opts_reuse[0])
    fresh.update_discriminator(x, opts_fresh[0])
    loss_reuse = reuse.update_generator(x, opts_reuse[1], fake)
    loss_fresh = fresh.update_generator(x, opts_fresh[1])
    assert torch.allclose(loss_reuse, loss_fresh)
    for a, b in zip(reuse.generator.parameters(), fresh.generator.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


# ---- the losses --------------------------------------------------------------------------------------
def constant_images(*per_sample: float) -> torch.Tensor:
    return torch.tensor(per_sample).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


@pytest.mark.parametrize("variant, expected_d, expected_g", [
    # ‖x−D(x)‖ = mean(0.2, 0.4) = 0.3, ‖G(x)−D(G(x))‖ = mean(0.9, 1.1) = 1.0, ‖x−G(x)‖ = mean(0.1, 0.3) = 0.2
    ("paper", 0.3 - 1.0, 0.2 + 1.0),
    ("code", abs(0.3 - 0.5 * 1.0), 0.2 + 0.5 * 1.0),
])
def test_losses_equal_hand_computed_values(variant, expected_d, expected_g):
    model = tiny_model(variant=variant)
    x = torch.zeros(2, 1, 2, 2)
    # per-pixel errors that differ inside an image but average to the per-sample values above
    x_by_d = constant_images(0.2, 0.4) + torch.tensor([[0.1, -0.1], [0.05, -0.05]])
    fake = constant_images(0.1, -0.3)
    fake_by_d = fake + constant_images(0.9, -1.1)
    assert model.discriminator_loss(x, x_by_d, fake, fake_by_d).item() == pytest.approx(expected_d)
    assert model.generator_loss(x, fake, fake_by_d).item() == pytest.approx(expected_g)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_updates_minimise_the_losses_of_the_network_outputs(variant):
    """The losses the updates step on are those of the networks' outputs, written out here."""
    model = tiny_model(variant=variant)
    weight, absolute = (1.0, False) if variant == "paper" else (0.5, True)
    opt_discriminator, opt_generator = model.configure_optimizers()
    x = batch()

    def l1(a, b):
        return (a - b).abs().mean(dim=(1, 2, 3)).mean()

    with torch.no_grad():  # train-mode forwards are deterministic for the same batch
        fake = model.generator(x)
        expected_d = l1(x, model.discriminator(x)) - weight * l1(fake, model.discriminator(fake))
        expected_d = expected_d.abs() if absolute else expected_d
    loss_d, _ = model.update_discriminator(x, opt_discriminator)
    assert loss_d.item() == pytest.approx(expected_d.item(), rel=1e-5)

    with torch.no_grad():  # after D's step
        fake = model.generator(x)
        expected_g = l1(x, fake) + weight * l1(fake, model.discriminator(fake))
    assert model.update_generator(x, opt_generator).item() == pytest.approx(expected_g.item(), rel=1e-5)


def test_score_and_reconstruction():
    model = tiny_model().eval()
    x = batch(5)
    with torch.no_grad():
        recon = model.reconstruct(x)
        assert torch.allclose(recon, model.discriminator(model.generator(x)))
        expected = torch.stack([(xi - ri).pow(2).sum().sqrt() for xi, ri in zip(x, recon)])
        assert torch.allclose(model.score(x), expected, rtol=1e-5)
    assert recon.shape == x.shape and recon.min() >= -1 and recon.max() <= 1  # tanh output


def test_bad_variant_is_refused(tmp_path):
    assert refusal(tmp_path, ["method=adae", "method.variant=gan"]) == \
        "method.variant='gan': must be one of code, paper"


# ---- end to end -------------------------------------------------------------------------------------------
# The code variant's separation, evaluate and determinism (nine normal classes, 20 epochs at lr
# 1e-3): tests/test_method_contract.py. The paper variant at that budget does not settle (its L_D
# is unbounded below: D wins and the score swings between 0.0 and 0.9 from epoch to epoch), so it
# only gets a run-through; the paper's own schedule is lr 1e-5 for 100 epochs.
@pytest.mark.slow
def test_adae_paper_variant_runs_through(tmp_path, mnist_root):
    results = train(mnist_run(tmp_path, mnist_root, "method=adae", "method.variant=paper", "method.generator.base_width=16",
                              "protocol=holdout_class", "protocol.anomalous=[3]", "method.lr=1e-4", "trainer.max_epochs=2"))
    assert results["status"] == "ok" and math.isfinite(results["metrics"]["threshold"])

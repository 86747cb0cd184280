"""AnoGAN and f-AnoGAN: the batched latent search, which network each update trains, the
f-AnoGAN stages, and end-to-end separation of easy anomalies."""

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from anomaly import AnomalyError
from anomaly.methods.anogan import AnoGAN, anogan_loss, latent_search, latent_search_per_image
from anomaly.methods.fanogan import FAnoGAN, gradient_penalty
from anomaly.nets import DCGANDiscriminator, DCGANEncoder, DCGANGenerator
from anomaly.pipeline import train
from tests.conftest import refusal
from tests.helpers.runs import changed_networks, mnist_run

SHAPE = [1, 16, 16]


def outside_trainer(model):
    model.manual_backward = lambda loss: loss.backward()
    return model


def narrow(top_width: int = 16) -> dict:
    """Both methods' default networks with a narrow 4×4 end."""
    return {"generator": partial(DCGANGenerator, top_width=top_width),
            "discriminator": partial(DCGANDiscriminator, top_width=top_width),
            "critic": partial(DCGANDiscriminator, top_width=top_width, norm="layer"),
            "encoder": partial(DCGANEncoder, top_width=top_width, norm="layer")}


def tiny_anogan(**kwargs) -> AnoGAN:
    torch.manual_seed(0)
    nets = {k: v for k, v in narrow().items() if k in ("generator", "discriminator")}
    return outside_trainer(AnoGAN(SHAPE, latent_dim=8, **nets, **kwargs).train())


def tiny_fanogan(**kwargs) -> FAnoGAN:
    torch.manual_seed(0)
    nets = {k: v for k, v in narrow().items() if k in ("generator", "critic", "encoder")}
    return outside_trainer(FAnoGAN(SHAPE, latent_dim=8, **nets, **kwargs).train())


def batch(n: int = 8, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, *SHAPE, dtype=dtype) * 2 - 1


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BN running statistics too)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(before: dict[str, torch.Tensor], after) -> bool:
    """Bit-identical (`after`: a module or another state)."""
    after = after if isinstance(after, dict) else after.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ---- networks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, generator_widths", [(16, [512, 256]), (32, [512, 256, 128]),
                                                    (64, [512, 256, 128, 64])])
def test_dcgan_networks_are_sized_from_the_image(size, generator_widths):
    torch.manual_seed(0)  # unseeded, a random init now and then saturated tanh to exactly 1.0
    generator = DCGANGenerator(100, [3, size, size])
    discriminator = DCGANDiscriminator([3, size, size])
    assert generator.widths == generator_widths and discriminator.widths == generator_widths
    if size == 16:  # the forward pass of the larger ones costs seconds on a shared CPU
        image = generator(torch.rand(2, 100) * 2 - 1)
        assert image.shape == (2, 3, size, size) and image.abs().max() < 1  # tanh
        assert discriminator(image).shape == (2,)
        assert discriminator.features(image).shape == (2, 512 * 4 * 4)


def test_sizes_the_networks_cannot_take_are_named():
    with pytest.raises(AnomalyError, match=r"image size 28×28 does not fit the DCGAN networks: .*16, 32, 64"):
        AnoGAN([1, 28, 28])
    with pytest.raises(AnomalyError, match=r"need 2 positive widths"):
        AnoGAN(SHAPE, generator=partial(DCGANGenerator, widths=[64, 32, 16]))


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(AnomalyError, match=r"method.value_range='unit'"):
        AnoGAN(SHAPE, value_range="unit")
    assert refusal(tmp_path, ["method=anogan", "method.feature_weight=1.5"]) == \
        "method.feature_weight=1.5: must be a number in [0, 1]"
    assert refusal(tmp_path, ["method=fanogan", "method.encoder_epochs=0"]) == \
        "method.encoder_epochs=0: must be an integer ≥ 1"


# ---- AnoGAN: the latent search --------------------------------------------------------------------------
def trained_anogan(dtype=torch.float32, **kwargs) -> AnoGAN:
    """A few GAN steps, so that G and D are not at their initialisation."""
    model = tiny_anogan(**kwargs).to(dtype)
    opt_d, opt_g = model.configure_optimizers()
    for _ in range(3):
        _, z = model.update_discriminator(batch(16, dtype), opt_d)
        model.update_generator(z, opt_g)
    return model


def test_batched_search_equals_the_per_image_loop():
    model = trained_anogan(torch.float64)
    x = batch(5, torch.float64)
    z0 = model.sample_prior(5).double()
    search = {"steps": 25, "lr": 0.05, "feature_weight": 0.1}
    before = {name: state(getattr(model, name)) for name in ("generator", "discriminator")}
    # module in train mode: the search must still use BN running statistics (no coupling)
    score, z, fake = latent_search(model.generator, model.discriminator, x, z0, **search)
    assert all(m.training for m in model.modules())  # modes restored after the search
    model.eval()
    score_loop, z_loop, fake_loop = latent_search_per_image(model.generator, model.discriminator, x, z0, **search)
    assert torch.allclose(score, score_loop, rtol=1e-5, atol=0)
    assert torch.allclose(z, z_loop, rtol=1e-5, atol=1e-8) and torch.allclose(fake, fake_loop, atol=1e-8)
    # G and D frozen: weights and running statistics untouched
    assert all(same_state(before[n], getattr(model, n)) for n in before)
    # the search moved z and lowered the loss; the score is the loss at the returned z
    start, _, _ = latent_search(model.generator, model.discriminator, x, z0, steps=0)
    assert (score < start).all() and not torch.allclose(z, z0)
    with torch.no_grad():
        expected = anogan_loss(x, model.generator(z), model.discriminator.features(x),
                               model.discriminator.features(model.generator(z)), 0.1)
    assert torch.allclose(score, expected) and torch.allclose(fake, model.generator(z).detach())


def test_anogan_loss_by_hand():
    x, fake = torch.zeros(2, 1, 2, 2), torch.tensor([0.5, -1.0]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2)
    fx, ffake = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [2.0, 2.0, 2.0]])
    # Σ|x−G| = 2 and 4, Σ|f−f| = 1 and 6
    expected = torch.tensor([0.9 * 2 + 0.1 * 1, 0.9 * 4 + 0.1 * 6])
    assert torch.allclose(anogan_loss(x, fake, fx, ffake, 0.1), expected)


def test_each_image_starts_from_its_own_fresh_latent_and_scores_are_reproducible():
    model = trained_anogan(search_steps=5, search_lr=0.05).eval()
    x = batch(4)
    x[1] = x[0]  # the same image twice in one batch: two independent starts
    with torch.no_grad():  # as in Lightning's scoring loops
        model.on_test_epoch_start()
        first = model.score(x)
        second_batch = model.score(x)  # the next batch draws new starts
        model.on_test_epoch_start()  # re-seeded at each epoch: the same numbers again
        again = model.score(x)
    with torch.inference_mode():  # trainer.inference_mode=true: the search still gets its gradients
        model.on_test_epoch_start()
        inferred = model.score(x)
    assert torch.equal(first, again) and torch.allclose(first, inferred)
    assert not torch.equal(first, second_batch)
    assert first[0] != first[1]


# ---- AnoGAN: training ----------------------------------------------------------------------------------
def test_anogan_updates_change_only_their_own_network():
    model = tiny_anogan()
    opt_d, opt_g = model.configure_optimizers()
    x = batch()
    before = state(model)
    _, z = model.update_discriminator(x, opt_d)
    assert changed_networks(before, model) == {"discriminator"}
    assert all(p.grad is None for p in model.generator.parameters())
    d_grads = [p.grad.clone() for p in model.discriminator.parameters()]
    before = state(model)
    model.update_generator(z, opt_g)
    assert changed_networks(before, model) == {"generator"}
    assert all(torch.equal(g, p.grad) for g, p in zip(d_grads, model.discriminator.parameters()))


# ---- f-AnoGAN -------------------------------------------------------------------------------------------
def test_fanogan_updates_change_only_their_own_network():
    model = tiny_fanogan()
    opt_c, opt_g, opt_e = model.configure_optimizers()
    assert isinstance(opt_e, torch.optim.RMSprop) and opt_c.defaults["betas"] == (0.0, 0.9)
    x = batch()
    before = state(model)
    model.update_critic(x, opt_c)
    assert changed_networks(before, model) == {"critic"}
    before = state(model)
    model.update_generator(len(x), x, opt_g)
    assert changed_networks(before, model) == {"generator"}
    gan = {name: state(getattr(model, name)) for name in ("generator", "critic")}
    before = state(model)
    model.update_encoder(x, opt_e)
    assert changed_networks(before, model) == {"encoder"}
    for name, saved in gan.items():  # bit-identical, BN running statistics included
        assert same_state(saved, getattr(model, name)), name


def test_gradient_penalty_of_a_linear_critic():
    """A linear critic w·x has gradient w everywhere: the penalty is (‖w‖ − 1)²."""
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # ‖w‖ = 5
    real, fake = torch.rand(6, 1, 2, 2), torch.rand(6, 1, 2, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(16.0)


def test_fanogan_score_is_the_izif_residual():
    model = tiny_fanogan(feature_weight=0.5).eval()
    x = batch(3)
    with torch.no_grad():
        fake = model.generator(model.encoder(x))
        fx, ff = model.critic.features(x), model.critic.features(fake)
        expected = ((x - fake) ** 2).mean(dim=(1, 2, 3)) + 0.5 * ((fx - ff) ** 2).mean(1)
        assert torch.allclose(model.score(x), expected)
    assert model.encoder(x).abs().max() < 1  # tanh latent


class StageWatch(L.Callback):
    """Saves G and D when the encoder stage starts, and every network after the GAN stage."""

    def on_train_epoch_start(self, trainer, model):
        if trainer.current_epoch == model.gan_epochs:
            self.gan = {n: state(getattr(model, n)) for n in ("generator", "critic", "encoder")}

    def on_train_epoch_end(self, trainer, model):
        if trainer.current_epoch == 0:
            self.first_epoch_generator = state(model.generator)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_fanogan_stages_in_one_fit_and_the_encoder_stage_leaves_g_and_d_unchanged(tmp_path):
    nets = {k: v for k, v in narrow().items() if k in ("generator", "critic", "encoder")}
    model = FAnoGAN(SHAPE, latent_dim=8, **nets, gan_epochs=2, encoder_epochs=2, critic_steps=2)
    initial = {n: state(getattr(model, n)) for n in ("generator", "critic", "encoder")}
    images = (torch.rand(12, *SHAPE) * 255).to(torch.uint8)
    loader = DataLoader(images, batch_size=4, collate_fn=lambda b: {"image": torch.stack(b)})  # 3 batches
    watch = StageWatch()
    trainer = L.Trainer(max_epochs=7, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[watch])
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.current_epoch == 4  # gan_epochs + encoder_epochs, not trainer.max_epochs
    # GAN stage: G and D trained (G in the first epoch already: steps count over the run), E not
    assert not same_state(initial["generator"], watch.first_epoch_generator)
    assert not same_state(initial["critic"], model.critic)
    assert same_state(initial["encoder"], watch.gan["encoder"])
    # encoder stage: E trained, G and D bit-identical (parameters and buffers)
    assert not same_state(watch.gan["encoder"], model.encoder)
    assert same_state(watch.gan["generator"], model.generator)
    assert same_state(watch.gan["critic"], model.critic)


# ---- end to end -------------------------------------------------------------------------------------------
# Both methods' separation of an easy anomaly, evaluate (AnoGAN's seeded search) and determinism:
# tests/test_method_contract.py. Here: f-AnoGAN's two stages through the pipeline.
@pytest.mark.slow
def test_fanogan_trains_its_two_stages_through_the_pipeline(tmp_path, mnist_root):
    results = train(mnist_run(tmp_path, mnist_root, "method=fanogan", "~paper", "method.generator.top_width=32",
                              "method.latent_dim=16", "method.gan_epochs=2", "method.encoder_epochs=1",
                              "+trainer.limit_train_batches=2", "logger=none"))
    # trainer.max_epochs (not set) follows gan_epochs + encoder_epochs
    assert results["status"] == "ok" and results["method"] == "fanogan" and results["epochs"] == 3
    assert math.isfinite(results["metrics"]["threshold"])

"""Deep SVDD (anomaly/methods/deep_svdd.py, anomaly/nets/lenet.py): the published networks, the
centre, the objectives and score, the two stages of one run, resuming, and the settings refused."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import lightning as L
import torch
from torch import nn

from anomaly import AnomalyError
from anomaly.config_schema import ConfigError, check_train
from anomaly.methods.deep_svdd import DeepSVDD, global_contrast_normalisation, push_from_zero
from anomaly.nets.lenet import LeNetDecoder, LeNetEncoder
from anomaly.pipeline import train
from tests.conftest import compose_config, refusal
from tests.helpers.runs import mnist_run
from tests.test_step_syncs import counted_training

torch.manual_seed(0)


# ---- the networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, weights", [
    # MNIST_LeNet: conv 8, conv 4, dense 4·7·7 → 32
    ((1, 28, 28), [(8, 1, 5, 5), (4, 8, 5, 5), (32, 196)]),
    # CIFAR10_LeNet: conv 32, 64, 128, dense 128·4·4 → 128
    ((3, 32, 32), [(32, 3, 5, 5), (64, 32, 5, 5), (128, 64, 5, 5), (128, 2048)]),
    ((1, 32, 32), [(8, 1, 5, 5), (4, 8, 5, 5), (32, 256)]),
])
def test_encoder_is_the_published_lenet_without_bias_or_bounded_activation(shape, weights):
    encoder = LeNetEncoder(shape)
    assert [tuple(p.shape) for p in encoder.parameters()] == weights
    assert all(name.endswith("weight") for name, _ in encoder.named_parameters())
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.MaxPool2d, nn.Linear, nn.Sequential, LeNetEncoder)
    for m in encoder.modules():
        assert isinstance(m, allowed), m  # no sigmoid / tanh: nothing bounded
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.bias is None
        if isinstance(m, nn.BatchNorm2d):
            assert not m.affine and m.eps == 1e-4
    # a zero image maps to exactly zero (no bias anywhere, BN in eval mode starts at mean 0)
    encoder.eval()
    assert torch.equal(encoder(torch.zeros(2, *shape)), torch.zeros(2, encoder.rep_dim))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 16, 16), (1, 32, 32), (3, 28, 28)])
def test_decoder_mirrors_the_encoder_to_the_image_shape(shape):
    encoder, decoder = LeNetEncoder(shape), LeNetDecoder(shape)
    out = decoder(encoder(torch.rand(3, *shape)))
    assert out.shape == (3, *shape) and bool(((out > 0) & (out < 1)).all())
    assert all(m.bias is None for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d))


def test_mnist_decoder_is_the_published_layout():
    decoder = LeNetDecoder((1, 28, 28))
    # 2×4×4 → up 8 → deconv 4 → up 16 → deconv 8 trimmed to 14 (padding 3) → up 28 → deconv 1
    assert [(d.in_channels, d.out_channels, d.padding[0]) for d in decoder.deconvs] == [(2, 4, 2), (4, 8, 3), (8, 1, 2)]
    assert decoder.first_upsampled == 0 and isinstance(decoder.latent_norm, nn.Identity)
    # CIFAR-10: no upsampling before the first transposed convolution, BatchNorm1d on the code
    colour = LeNetDecoder((3, 32, 32))
    assert colour.first_upsampled == 1 and isinstance(colour.latent_norm, nn.BatchNorm1d)


def test_networks_refuse_sizes_they_cannot_take():
    with pytest.raises(AnomalyError, match=r"rep_dim=20: the decoder needs a multiple of 16"):
        LeNetDecoder((1, 28, 28), in_features=20)
    with pytest.raises(AnomalyError, match=r"cannot produce 30×30 images"):
        LeNetDecoder((1, 30, 30))
    with pytest.raises(AnomalyError, match=r"pool 4×4 images below 1×1"):
        LeNetEncoder((1, 4, 4), widths=[8, 4, 2])


# ---- preprocessing, centre, objectives ----------------------------------------------------------------
def test_gcn_is_per_image_l1_and_minmax_uses_the_training_extremes():
    x = torch.rand(4, 1, 8, 8)
    g = global_contrast_normalisation(x)
    assert torch.allclose(g.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-6)
    assert torch.allclose(g.abs().mean(dim=(1, 2, 3)), torch.ones(4), atol=1e-5)
    assert torch.allclose(global_contrast_normalisation(x * 3 + 1), g, atol=1e-5)  # no value-range dependence
    assert torch.equal(global_contrast_normalisation(torch.full((1, 1, 4, 4), 0.5)), torch.zeros(1, 1, 4, 4))
    model = DeepSVDD([1, 8, 8], encoder=partial(LeNetEncoder, widths=[4], rep_dim=16),
                     decoder=partial(LeNetDecoder, widths=[4]))
    model.fit_preprocessing([{"image": x[:2]}, {"image": x[2:]}])
    assert float(model.gcn_min) == float(g.min()) and float(model.gcn_max) == float(g.max())
    scaled = model.preprocess(x)
    assert float(scaled.min()) == pytest.approx(0.0, abs=1e-6) and float(scaled.max()) == pytest.approx(1.0)


def test_center_entries_near_zero_are_pushed_to_eps():
    c = torch.tensor([0.0, 0.05, -0.05, -0.2, 0.3, 1e-9, -0.1, 0.1])
    assert torch.equal(push_from_zero(c, 0.1), torch.tensor([0.1, 0.1, -0.1, -0.2, 0.3, 0.1, -0.1, 0.1]))


def tiny_model(**kwargs) -> DeepSVDD:
    torch.manual_seed(0)
    model = DeepSVDD([1, 16, 16], **{"pretrain_epochs": 1, "svdd_epochs": 2, "warm_up_epochs": 1, **kwargs})
    x = torch.rand(20, 1, 16, 16)
    model.fit_preprocessing([{"image": x}])
    return model


def test_center_is_the_eval_mode_mean_of_the_training_features():
    model = tiny_model(center_eps=0.1)
    x = torch.rand(30, 1, 16, 16)
    model.train()
    model.fit_center([{"image": x[:13]}, {"image": x[13:]}])
    assert model.encoder.training and bool(model.center_ready)  # its mode is back
    model.eval()
    with torch.no_grad():
        mean = model.encoder(model.preprocess(x)).mean(0)
    assert bool((model.center.abs() >= 0.1).all())
    far = mean.abs() >= 0.1
    assert torch.allclose(model.center[far], mean[far], atol=1e-6)
    assert torch.equal(model.center[~far], torch.where(mean[~far] < 0, -0.1, 0.1))


@pytest.mark.parametrize("objective", ["one-class", "soft-boundary"])
def test_score_is_the_squared_distance_to_c_minus_r2_for_soft_boundary(objective):
    model = tiny_model(objective=objective)
    model.center.copy_(torch.randn_like(model.center))
    model.center_ready.fill_(True)
    model.radius.fill_(0.7)
    model.eval()
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        phi = model.encoder(model.preprocess(x))
        dist = ((phi - model.center) ** 2).sum(1)
        expected = dist - 0.49 if objective == "soft-boundary" else dist
        assert torch.allclose(model.score(x), expected, atol=1e-5)
        # the losses: mean distance; R² + 1/ν · mean max(0, d − R²)
        d = torch.tensor([0.1, 0.5, 2.0])
        loss = model.svdd_loss(d)
        want = d.mean() if objective == "one-class" else 0.49 + (d - 0.49).clamp_min(0).mean() / model.nu
        assert torch.allclose(loss, want)


def test_score_is_the_reconstruction_error_before_there_is_a_centre():
    model = tiny_model()
    model.eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        xp = model.preprocess(x)
        assert torch.allclose(model.score(x), ((model.decoder(model.encoder(xp)) - xp) ** 2).sum(dim=(1, 2, 3)))


class AtEpoch(DeepSVDD):
    """DeepSVDD with the epoch set by hand and a plain optimiser step (no Trainer)."""

    current_epoch = 0  # shadows the Trainer's

    def manual_step(self, optimizer, loss):
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def log(self, *args, **kwargs):
        pass


def test_soft_boundary_radius_is_the_batch_quantile_after_warm_up():
    torch.manual_seed(0)
    model = AtEpoch([1, 16, 16], objective="soft-boundary", nu=0.3, warm_up_epochs=2, pretrain_epochs=1,
                    svdd_epochs=4, lr=1e-3)
    model.fit_preprocessing([{"image": torch.rand(20, 1, 16, 16)}])
    model.fit_center([{"image": torch.rand(20, 1, 16, 16)}])
    optimizers, _ = model.configure_optimizers()
    model.optimizers = lambda: optimizers
    model.train()
    x = torch.rand(16, 1, 16, 16)
    for epoch in (1, 2):  # stage epochs 0 and 1: the warm-up, R stays 0
        model.current_epoch = epoch
        model.training_step({"image": x}, 0)
        assert float(model.radius) == 0.0
    model.current_epoch = 3  # stage epoch 2: after the warm-up
    with torch.no_grad():
        before = model.distances(model.preprocess(x))  # the pre-update distances the step sees
    model.training_step({"image": x}, 0)
    expected = np.quantile(np.sqrt(before.numpy()), 1 - 0.3)  # the code's get_radius
    assert float(model.radius) == pytest.approx(float(expected), rel=1e-5)


def test_each_stage_updates_its_own_networks():
    torch.manual_seed(0)
    model = AtEpoch([1, 16, 16], pretrain_epochs=1, svdd_epochs=1, lr=1e-2, ae_lr=1e-2)
    model.fit_preprocessing([{"image": torch.rand(20, 1, 16, 16)}])
    optimizers, _ = model.configure_optimizers()
    model.optimizers = lambda: optimizers
    model.train()
    x = torch.rand(8, 1, 16, 16)

    def copies():
        return [p.detach().clone() for p in model.encoder.parameters()], \
            [p.detach().clone() for p in model.decoder.parameters()]

    enc, dec = copies()
    model.training_step({"image": x}, 0)  # epoch 0: the autoencoder
    assert all(not torch.equal(a, b) for a, b in zip(enc, model.encoder.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(dec, model.decoder.parameters()))
    model.current_epoch = 1
    model.fit_center([{"image": x}])
    enc, dec = copies()
    model.training_step({"image": x}, 0)  # epoch 1: Deep SVDD, the encoder only
    assert all(not torch.equal(a, b) for a, b in zip(enc, model.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(dec, model.decoder.parameters()))


def test_bad_settings_are_refused_in_one_line(tmp_path):
    assert refusal(tmp_path, ["method=deep_svdd", "method.objective=hard"]) == \
        "method.objective='hard': must be one of one-class, soft-boundary"
    with pytest.raises(AnomalyError, match=r"^method.value_range='symmetric': method=deep_svdd needs unit"):
        DeepSVDD([1, 16, 16], value_range="symmetric")
    cases = {
        ("trainer.max_epochs=4", "method.pretrain_epochs=2"):
            "trainer.max_epochs=4 contradicts method=deep_svdd's two stages, method.pretrain_epochs + "
            "method.svdd_epochs = 2 + 150 = 152 epochs: set method.pretrain_epochs and method.svdd_epochs instead "
            "(e.g. method.pretrain_epochs=2 method.svdd_epochs=2 for 4 epochs); trainer.max_epochs follows their "
            "sum when you leave it out",
        ("method.objective=soft-boundary", "method.pretrain_epochs=0", "method.svdd_epochs=10"):
            "method.warm_up_epochs=10 with method.svdd_epochs=10: the soft-boundary radius R is set only after "
            "the warm-up, so it would stay 0; give fewer warm-up epochs (the code's 10) or more SVDD epochs",
        ("method.nu=1.5",): "method.nu=1.5: must be a number in (0, 1]",
        ("method.preprocessing=zca",): "method.preprocessing='zca': must be one of gcn_minmax, none",
    }
    for overrides, message in cases.items():
        cfg = compose_config(tmp_path, ["method=deep_svdd", *overrides])
        with pytest.raises(ConfigError) as refused:
            check_train(cfg)
        assert str(refused.value) == message and "\n" not in message
    # left at the trainer's default, trainer.max_epochs becomes the stages' sum
    cfg = compose_config(tmp_path, ["method=deep_svdd", "method.pretrain_epochs=3", "method.svdd_epochs=4"])
    check_train(cfg)
    assert cfg.trainer.max_epochs == 7


def test_mnist_paper_settings_are_the_published_codes(tmp_path):
    cfg = compose_config(tmp_path, ["method=deep_svdd", "dataset=mnist"])
    check_train(cfg)
    assert cfg.paper_settings.name == "deep_svdd_mnist"
    m = cfg.method
    assert (m.pretrain_epochs, m.svdd_epochs, cfg.trainer.max_epochs, cfg.data.batch_size) == (150, 150, 300, 200)
    assert (m.lr, m.weight_decay, list(m.lr_milestones)) == (1e-4, 0.5e-6, [50])
    assert (m.ae_lr, m.ae_weight_decay, list(m.ae_lr_milestones)) == (1e-4, 0.5e-3, [50])
    assert (m.objective, m.nu, m.preprocessing, cfg.dataset.image_size) == ("one-class", 0.1, "gcn_minmax", 28)


# ---- through the pipeline: the stage switch, the schedules, resuming -----------------------------------------
class StageProbe(L.Callback):
    """Records, at the first batch of every epoch, what the run is doing; copies the checkpoint of
    the first SVDD epoch's end (`copy_to`)."""

    records: list[dict] = []
    copy_to: Path | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx:
            return
        dm = trainer.datamodule
        record = {"epoch": trainer.current_epoch, "stage": module.stage, "ready": bool(module.center_ready),
                  "center": module.center.clone(), "lr": [o.param_groups[0]["lr"] for o in trainer.optimizers],
                  "decoder": [p.detach().clone() for p in module.decoder.parameters()],
                  "encoder": [p.detach().clone() for p in module.encoder.parameters()]}
        if record["ready"] and not any(r["ready"] for r in self.records):  # c was just computed: recompute it
            was = module.encoder.training
            module.encoder.eval()
            with torch.no_grad():
                feats = torch.cat([module.encoder(module.preprocess(b["image"]))
                                   for b in module.device_batches(dm.train_eval_dataloader())])
            module.encoder.train(was)
            record["expected_center"] = push_from_zero(feats.mean(0), module.center_eps)
        self.records.append(record)

    def on_train_epoch_start(self, trainer, module):
        ckpt = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        if self.copy_to is not None and trainer.current_epoch == module.pretrain_epochs + 1:
            shutil.copy(ckpt, self.copy_to)


PROBE = ["+callbacks.probe._target_=tests.test_deep_svdd.StageProbe", "callbacks.model_checkpoint.every_seconds=0",
         "method.pretrain_epochs=2", "method.svdd_epochs=3", "method.ae_lr=1e-3", "method.lr=1e-3",
         "method.ae_lr_milestones=[1]", "method.lr_milestones=[2]", "protocol.normal=[5]", "logger=none", "~paper"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into another run dir, on purpose
def test_stages_switch_at_the_configured_epoch_and_resume_keeps_c(tmp_path, mnist_root, monkeypatch):
    StageProbe.records, StageProbe.copy_to = [], tmp_path / "mid.ckpt"
    results = train(mnist_run(tmp_path / "a", mnist_root, "method=deep_svdd", *PROBE))
    records = StageProbe.records
    assert results["status"] == "ok" and [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["stage"] for r in records] == ["pretrain"] * 2 + ["svdd"] * 3
    assert [r["ready"] for r in records] == [False, False, True, True, True]
    # c: from the pretrained encoder over the training images, at the SVDD stage's start; then fixed
    assert torch.allclose(records[2]["center"], records[2]["expected_center"], atol=1e-5)
    assert all(torch.equal(r["center"], records[2]["center"]) for r in records[3:])
    # lr ÷ 10 at each stage's milestones (stage epochs): autoencoder [1], Deep SVDD [2]
    assert np.allclose([r["lr"] for r in records], [[1e-3, 1e-3], [1e-4, 1e-3], [1e-4, 1e-3], [1e-4, 1e-3],
                                                    [1e-4, 1e-4]], rtol=1e-9)
    # the decoder trains while pretraining only; the encoder in both stages (its weights carry over)
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    assert not same(records[0]["decoder"], records[1]["decoder"])
    assert not same(records[1]["decoder"], records[2]["decoder"])
    assert same(records[2]["decoder"], records[4]["decoder"])
    assert all(not same(records[i]["encoder"], records[i + 1]["encoder"]) for i in range(4))

    # resumed after the first SVDD epoch: c comes from the checkpoint, never recomputed
    final = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    calls = []
    fit_center = DeepSVDD.fit_center
    monkeypatch.setattr(DeepSVDD, "fit_center", lambda self, *a: calls.append(1) or fit_center(self, *a))
    StageProbe.records, StageProbe.copy_to = [], None
    again = train(mnist_run(tmp_path / "b", mnist_root, "method=deep_svdd", *PROBE,
                            f"ckpt_path={tmp_path / 'mid.ckpt'}"))
    assert calls == [] and [r["epoch"] for r in StageProbe.records] == [3, 4]
    assert torch.equal(StageProbe.records[0]["center"], records[2]["center"])
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in ("center", "gcn_min", "gcn_max"):
        assert torch.equal(resumed[key], final[key]), key
    assert again["metrics"] == results["metrics"]


@pytest.mark.slow
def test_soft_boundary_training_steps_read_nothing_on_the_host(monkeypatch, tmp_path, mnist_root):
    steps = counted_training(monkeypatch, tmp_path, mnist_root, "deep_svdd", "method.objective=soft-boundary",
                             "method.warm_up_epochs=0", "method.pretrain_epochs=1", "method.svdd_epochs=2",
                             "trainer.log_every_n_steps=1000", "callbacks.progress_bar.refresh_seconds=3600")
    assert len(steps) >= 8 and steps == [{}] * len(steps)

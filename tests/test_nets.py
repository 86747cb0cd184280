"""Networks injected by config (anomaly/nets/build.py): a swapped backbone is an override, a
network that does not fit the method's shapes is refused in one line before training, and a
default network keeps the config hash the flat keys had (anomaly/net_identity.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from anomaly import AnomalyError
from anomaly.config import config_hash
from anomaly.config_schema import check_train
from anomaly.pipeline import build_method, train
from tests.conftest import compose_config
from tests.helpers.runs import mnist_run

HASHES = json.loads((Path(__file__).parent / "helpers" / "config_hashes.json").read_text())["hashes"]


# ---- identity: what changes the numbers ------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(HASHES))
def test_a_default_net_keeps_the_hash_of_its_flat_keys(tmp_path, command):
    """Every method's default config (alone, per dataset, per experiment) and a net setting that a
    flat key once set compose to the hash they had before networks were injected."""
    cfg = compose_config(tmp_path, command.split())
    check_train(cfg)
    assert config_hash(cfg) == HASHES[command]


@pytest.mark.parametrize("command", [
    "method=gpnd method.encoder._target_=anomaly.nets.DCGANDiscriminator",  # another class
    "method=gpnd +method.encoder.base_width=16",  # a setting no flat key had
    "method=deep_svdd net/deep_svdd@method=conv",
    "method=ae +method.encoder.negative_slope=0.1",
])
def test_a_non_default_net_changes_the_hash(tmp_path, command):
    method = command.split()[0]
    cfg = compose_config(tmp_path, command.split())
    check_train(cfg)
    assert config_hash(cfg) != HASHES[method]


def test_a_node_form_that_builds_another_net_than_its_flat_form_gets_its_own_hash(tmp_path):
    """AE's MLP: `method.encoder_widths=[64]` built a decoder of [64] (decoder_widths null: the
    mirror); `method.encoder.hidden=[64]` alone keeps the decoder's 256, 512: not that run
    (computed before nets were injected: 8608c1c2837e)."""
    cfg = compose_config(tmp_path, ["method=ae", "net/ae@method=mlp", "method.encoder.hidden=[64]"])
    check_train(cfg)
    assert config_hash(cfg) != "8608c1c2837e"


def test_a_net_class_named_by_its_module_is_the_same_net(tmp_path):
    cfg = compose_config(tmp_path, ["method=gpnd", "method.encoder._target_=anomaly.nets.conv.ConvEncoder"])
    assert config_hash(cfg) == HASHES["method=gpnd"]


# ---- a swapped backbone, one tiny step (the README's examples) ---------------------------------------
SWAPS = {
    "gpnd: another encoder width": ["method=gpnd", "method.latent_dim=8", "method.encoder.widths=[8,16]",
                                    "method.generator.widths=[16,8]", "method.discriminator.widths=[8,16]"],
    "gpnd: another encoder net": ["method=gpnd", "method.latent_dim=8", "method.encoder._target_=anomaly.nets.DCGANDiscriminator",
                                  "method.encoder.widths=[16,8]", "+method.encoder.norm=batch",
                                  "method.generator.widths=[16,8]", "method.discriminator.widths=[8,16]"],
    "deep_svdd: another net": ["method=deep_svdd", "net/deep_svdd@method=conv", "method.encoder.base_width=8",
                               "method.pretrain_epochs=1", "method.svdd_epochs=1"],
    "ae: the MLP": ["method=ae", "net/ae@method=mlp", "method.encoder.hidden=[32]", "method.decoder.hidden=[32]"],
    "arae: conv nets": ["method=arae", "net/arae@method=conv", "method.encoder.base_width=8", "method.steps=2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("swap", sorted(SWAPS))
def test_a_swapped_backbone_trains_one_step(tmp_path, mnist_root, swap):
    cfg = mnist_run(tmp_path, mnist_root, "protocol.normal=[5]", "logger=none", "+trainer.max_steps=1",
                    *SWAPS[swap])
    results = train(cfg)
    assert results["status"] == "ok", results


def test_a_swapped_backbone_is_the_network_built(tmp_path):
    cfg = compose_config(tmp_path, SWAPS["gpnd: another encoder net"])
    model = build_method(cfg, None, image_shape=(1, 16, 16))
    assert type(model.encoder).__name__ == "DCGANDiscriminator"
    cfg = compose_config(tmp_path, SWAPS["deep_svdd: another net"])
    model = build_method(cfg, None, image_shape=(1, 16, 16))
    assert (type(model.encoder).__name__, type(model.decoder).__name__) == ("ConvEncoder", "ConvDecoder")
    assert model.center.shape == (32,)  # the representation: the encoder's out_features


# ---- a network that does not fit: one line, before training -------------------------------------------
class ThreeOut(nn.Module):
    """A net of your own that ignores the output size the method asks for (and every setting)."""

    def __init__(self, **settings) -> None:
        super().__init__()
        self.linear = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


GPND_16 = ["method=gpnd", "method.latent_dim=8", "method.generator.widths=[16,8]", "method.discriminator.widths=[8,16]"]


@pytest.mark.parametrize("overrides, side, message", [
    ([*GPND_16, "method.encoder.widths=[8,16]", "method.latent_discriminator._target_=tests.test_nets.ThreeOut",
      "~method.latent_discriminator.hidden"], 16,
     r"^method=gpnd: method.latent_discriminator=ThreeOut gives 3 for inputs of 8; it needs 1 \(one logit per latent\)$"),
    ([*GPND_16, "method.encoder._target_=anomaly.nets.MLP", "~method.encoder.widths", "+method.encoder.hidden=[8]"], 16,
     r"^method=gpnd: method.encoder=anomaly.nets.MLP does not take what the method builds it with "
     r"\(image_shape, out_features\): "),
    ([*GPND_16, "method.encoder.widths=[8,16,32]"], 16,
     r"^method=gpnd \(1×16×16 images of digits\): 3 stage widths \[8, 16, 32\] fit 32×32 images, not 16×16"),
    (["method=gpnd", "method.discriminator._target_=anomaly.nets.DCGANDiscriminator"], 32,
     r"^method=gpnd: method.discriminator=DCGANDiscriminator gives a scalar for inputs of 1×32×32; "
     r"it needs 1 \(one logit per image\)$"),
    (["method=ae", "method.decoder._target_=tests.test_nets.ThreeOut"], 16,
     r"^method=ae: method.decoder=ThreeOut gives 3 for inputs of 32; it needs 1×16×16 \(an image\)$"),
    (["method=deep_svdd", "method.decoder._target_=tests.test_nets.ThreeOut"], 16,
     r"^method=deep_svdd: method.decoder=ThreeOut gives 3 for inputs of 32; it needs 1×16×16 \(an image"),
])
def test_a_net_that_does_not_fit_is_refused_in_one_line(tmp_path, overrides, side, message):
    cfg = compose_config(tmp_path, overrides)
    with pytest.raises(AnomalyError, match=message) as refused:
        build_method(cfg, None, image_shape=(1, side, side))
    assert "\n" not in str(refused.value)

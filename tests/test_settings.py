"""One declaration per setting: a method's hyper-parameter is a typed parameter of its `__init__`
with its default (anomaly.settings), checked when the config is composed (anomaly.config_schema),
and the method takes the value as given."""

from typing import Annotated, Literal, Sequence

import pytest
from omegaconf import open_dict

from anomaly.config_schema import ConfigError, check_train, method_rules
from anomaly.methods.ae import Autoencoder
from anomaly.pipeline import build_method
from anomaly.settings.rules import Choice, Float, Int, Ints, LatentDim, Net
from anomaly.settings.signature import hint_rules, signature_rules
from tests.conftest import TINY, compose_config


class DeeperAE(Autoencoder):
    """A throwaway method: the AE with one hyper-parameter more, declared once, by its parameter."""

    def __init__(self, image_shape: Sequence[int], depth: Annotated[int, Int(low=2)] = 3, **kwargs) -> None:
        super().__init__(image_shape, **kwargs)
        self.depth = depth


def deeper_config(tmp_path, *overrides: str):
    cfg = compose_config(tmp_path, [*TINY, "method=ae", *overrides])
    with open_dict(cfg):
        cfg.method._target_ = f"{__name__}.DeeperAE"
    return cfg


def test_a_hyper_parameter_added_by_its_declaration_is_validated(tmp_path):
    # a bad value: refused before anything is built, in one line naming the key and the range
    with pytest.raises(ConfigError) as refused:
        check_train(deeper_config(tmp_path, "+method.depth=1"))
    assert str(refused.value) == "method.depth=1: must be an integer ≥ 2"
    with pytest.raises(ConfigError, match=r"^method.depth='deep': must be an integer ≥ 2$"):
        check_train(deeper_config(tmp_path, "+method.depth=deep"))
    # the settings it inherits are its base's declarations
    with pytest.raises(ConfigError, match=r"^method.init='xavier': must be one of dcgan, none; "
                                          r"method.depth=0: must be an integer ≥ 2$"):
        check_train(deeper_config(tmp_path, "+method.depth=0", "method.init=xavier"))
    # a good value: accepted, and the instance has it as given
    cfg = deeper_config(tmp_path, "+method.depth=5")
    check_train(cfg)
    model = build_method(cfg, None, image_shape=(1, 16, 16))
    assert isinstance(model, DeeperAE) and model.depth == 5
    # left out: the default of the declaration
    assert build_method(deeper_config(tmp_path), None, image_shape=(1, 16, 16)).depth == 3


def test_the_rules_are_read_from_the_signatures_along_the_mro():
    rules = signature_rules(DeeperAE)
    assert rules["depth"] == Int(low=2)
    assert rules["latent_dim"] == Int(low=1)  # Autoencoder's
    assert rules["value_range"] == Choice(options=("unit", "symmetric"))  # AnomalyModule's
    assert rules["encoder.widths"].describe() == "a list of integers ≥ 1"  # a network node's
    assert "image_shape" not in rules and "kwargs" not in rules
    assert set(method_rules(deeper_config("/tmp"))) >= {"method.depth", "method.lr", "method.decoder.batch_norm"}


@pytest.mark.parametrize("hint, rule", [
    (int, Int()),
    (float, Float()),
    (bool, "true or false"),
    (Literal["a", "b"], Choice(options=("a", "b"))),
    (int | None, Int(null="none")),
    (Annotated[int | None, Int(low=2, null="all")], Int(low=2, null="all")),
    (Annotated[float, Float(low=0)] | None, Float(low=0, null="none")),
    (LatentDim, Int(low=1)),
    (str, None),
    (Sequence[int], None),
])
def test_a_plain_annotation_implies_its_rule(hint, rule):
    found = hint_rules(hint).get("")
    if isinstance(rule, str):
        assert found.describe() == rule
    else:
        assert found == rule


def test_a_network_parameter_declares_its_node_keys():
    rules = hint_rules(Annotated[Sequence, Net(hidden=Ints(low=1))])
    assert rules["hidden"] == Ints(low=1) and rules["batch_norm"].describe() == "true or false"
    assert "" not in rules


class HalfResolved:
    def __init__(self, known: Annotated[int, Int(low=1)] = 1, unknown: "NotDefinedAnywhere" = None) -> None:  # noqa: F821
        pass


def test_an_annotation_that_does_not_resolve_leaves_the_others_declared():
    assert signature_rules(HalfResolved) == {"known": Int(low=1)}

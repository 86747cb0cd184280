"""Published settings apply on their own: conf/paper/<method>_<dataset>.yaml is an optional
defaults entry keyed on the method and dataset choices (Hydra's specialising configuration), a
dataset without an official split picks its papers' protocol, and every key stays overridable."""

import logging

import pytest
from omegaconf import OmegaConf

from anomaly import provenance
from anomaly.pipeline import train
from tests.conftest import CONF_DIR, TINY, compose_config
from tests.helpers.formats import write_coil100

PAPER_FILES = sorted(p.stem for p in (CONF_DIR / "paper").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
# the pairs the papers (or their code) give settings for
PAIRS = {("gpnd", "mnist"), ("gpnd", "fashion_mnist"), ("gpnd", "coil100"), ("arae", "mnist"),
         ("arae", "fashion_mnist"), ("arae", "coil100"), ("adae", "mnist"), ("vae", "emnist_letters"),
         ("anogan", "mnist"), ("fanogan", "mnist"),
         # the VAE paper's model carried to the datasets its protocol runs on here
         ("vae", "mnist"), ("vae", "fashion_mnist"), ("deep_svdd", "mnist"), ("geom", "fashion_mnist"),
         # GEOM's code settings carried to MNIST, as the papers that quote its MNIST number ran it
         ("geom", "mnist")}
CARD = ["method=arae", "dataset=coil100", "protocol.normal=[1,3,77]"]


def published_keys(name: str) -> dict:
    data = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "paper" / f"{name}.yaml"))
    data.pop("paper_settings")
    return provenance._flatten(data)


def pair(name: str) -> tuple[str, str]:
    """(method, dataset) of a paper file's name: the longest method name it starts with
    (deep_svdd_mnist is deep_svdd × mnist)."""
    method = max((m for m in METHODS if name.startswith(m + "_")), key=len)
    return method, name[len(method) + 1:]


def test_every_published_pair_has_its_file():
    assert {pair(name) for name in PAPER_FILES} == PAIRS


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_FILES)
def test_pair_applies_its_settings_and_an_override_beats_them(tmp_path, name):
    method, dataset = pair(name)
    keys = published_keys(name)
    assert keys, name
    cfg = compose_config(tmp_path, [f"method={method}", f"dataset={dataset}"])
    assert cfg.paper_settings.name == name
    for key, value in keys.items():
        assert OmegaConf.select(cfg, key) == value, (name, key)
    # any key can be overridden on the command line, and the line says so
    key = next(k for k in keys if k.startswith("trainer.") or k.startswith("data."))
    cfg = compose_config(tmp_path, [f"method={method}", f"dataset={dataset}", f"{key}=3"])
    assert OmegaConf.select(cfg, key) == 3
    info = provenance.paper_settings(cfg)
    assert info["overridden"] == {key: 3}
    assert f"overridden: {key}=3" in provenance.paper_line(info)


@pytest.mark.slow
def test_no_paper_settings_where_none_were_published(tmp_path):
    cfg = compose_config(tmp_path, ["method=ae", "dataset=mnist"])
    assert cfg.get("paper_settings") is None and provenance.paper_line(provenance.paper_settings(cfg)) is None
    assert cfg.trainer.max_epochs == 50 and cfg.data.batch_size == 32  # the framework's defaults


def test_experiment_keeps_only_its_table_and_still_gets_the_pair(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=gpnd_mnist"])
    assert cfg.paper_settings.name == "gpnd_mnist" and cfg.trainer.max_epochs == 80
    assert cfg.protocol._target_.endswith("GPNDFolds") and cfg.threshold.positive == "normal"
    cfg = compose_config(tmp_path, ["experiment=arae_mnist_p2"])  # the union model on top of the pair
    assert cfg.method.attack == "union" and cfg.trainer.max_epochs == 500 and cfg.dataset.image_size == 28


def test_the_cards_command_composes_to_araes_coil_setup(tmp_path):
    cfg = compose_config(tmp_path, CARD)
    assert cfg.protocol._target_.endswith("CoilRandom") and list(cfg.protocol.normal) == [1, 3, 77]
    assert cfg.paper_settings.name == "arae_coil100"
    assert (cfg.method.eps, cfg.method.steps, cfg.data.batch_size, cfg.trainer.max_epochs) == (0.05, 20, 16, 1000)
    assert (cfg.dataset.image_size, cfg.dataset.resize_mode) == (32, "area")
    assert cfg.method.encoder._target_ == "anomaly.nets.DenseEncoder"  # the paper's MLP
    assert cfg.threshold.positive == "normal"  # the papers' inlier-positive F1
    # the user can still choose another protocol for COIL-100
    assert compose_config(tmp_path, [*CARD[:2], "protocol=anomaly_ratio"]).protocol._target_.endswith("AnomalyRatio")


@pytest.mark.slow
def test_the_cards_command_runs_one_tiny_step(tmp_path, caplog):
    write_coil100(tmp_path / "data", objects=[1, 3, 77, *range(4, 14)], angles=range(0, 100, 5), size=32)
    cfg = compose_config(tmp_path / "run", [*CARD, *TINY, f"paths.data_dir={tmp_path / 'data'}",
                                            "dataset.loader.download=false", "+trainer.fast_dev_run=true"])
    with caplog.at_level(logging.INFO, logger="anomaly"):
        results = train(cfg)
    assert results["status"] == "ok"
    # the classes as the user wrote them, their positions apart
    assert results["protocol"]["normal"] == ["1", "3", "77"]
    ids = results["protocol"]["normal_ids"]  # positions in the loader's class list, kept apart
    assert len(set(ids)) == 3 and ids != [1, 3, 77]
    assert results["protocol"]["outlier_ratio"] == pytest.approx(1 / 3)  # the written rule for 3 objects
    assert results["paper_settings"]["name"] == "arae_coil100"
    assert results["debug"] == "trainer.fast_dev_run=True"
    line = next(r.message for r in caplog.records if r.message.startswith("paper settings:"))
    assert "method.eps=0.05" in line and "overridden: data.batch_size=32" in line  # TINY sets 32


def test_an_experiment_training_another_model_is_measured_against_that_models_schedule(tmp_path):
    """experiment=arae_mnist_p2 trains the union model (500 epochs at batch 128 in its published
    code) on the L∞ model's MNIST settings (1,600 passes at 256): its schedule is the union's."""
    union = provenance.paper_settings(compose_config(tmp_path / "u", ["experiment=arae_mnist_p2"]))
    assert union["keys"]["trainer.max_epochs"] == 500 and union["keys"]["data.batch_size"] == 128
    assert union["overridden"] == {} and "union" in union["model"]
    assert provenance.schedule_text({"epochs": 500, "paper_settings": union}) == "500/500 ep"
    linf = provenance.paper_settings(compose_config(tmp_path / "l", ["experiment=arae_mnist_p2_linf"]))
    assert linf["keys"]["trainer.max_epochs"] == 1600 and "model" not in linf

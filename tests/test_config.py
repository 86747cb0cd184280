"""Every config group composes, and what it builds is what it says."""

from pathlib import Path

import hydra
import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from anomaly.data.protocols.base import Protocol
from anomaly.methods.base import AnomalyModule
from anomaly.config import instantiate
from anomaly.pipeline import build_trainer
from tests.conftest import CONF_DIR, TINY, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_default_config_is_the_embedded_digits_run(tmp_path):
    cfg = compose_config(tmp_path)
    assert cfg.dataset.name == "digits" and cfg.protocol._target_.endswith("OneClass")
    assert cfg.method._target_.endswith("Autoencoder") and cfg.seed == 0
    assert cfg.paths.output_dir == str(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("group", ["method", "dataset", "protocol", "trainer", "logger", "callbacks",
                                   "debug", "experiment"])
def test_every_option_composes(tmp_path, group):
    assert options(group), f"conf/{group}/ is empty"
    for option in options(group):
        cfg = compose_config(tmp_path, [f"{group}={option}"])
        if group == "method":
            cls = hydra.utils.get_class(cfg.method._target_)
            # a variant of a method is a setting of its class (ocsvm_tuned: the OC-SVM, γ tuned)
            assert issubclass(cls, AnomalyModule) and option.split("_tuned")[0] == cls.name
        elif group == "dataset":
            assert cfg.dataset.name == option and callable(instantiate(cfg.dataset.loader))
        elif group == "protocol":
            assert isinstance(instantiate(cfg.protocol), Protocol)
        elif group == "trainer":
            assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("logger", ["csv", "none"])
def test_trainer_with_callbacks_and_logger_builds(tmp_path, logger):
    cfg = compose_config(tmp_path, [*TINY, f"logger={logger}"])
    trainer = build_trainer(cfg)
    assert isinstance(trainer, L.Trainer) and trainer.max_epochs == cfg.trainer.max_epochs
    assert any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)
    assert (trainer.logger is not None) == (logger == "csv")


def test_evaluate_config_composes(tmp_path):
    cfg = compose_config(tmp_path, ["ckpt_path=x.ckpt"], config_name="evaluate")
    assert cfg.ckpt_path == "x.ckpt" and cfg.get("method") is None and cfg.refit_threshold is False
    cfg = compose_config(tmp_path, ["ckpt_path=x.ckpt", "method=ae"], config_name="evaluate")
    assert cfg.method._target_.endswith("Autoencoder")


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_DATA_DIR", "/somewhere/data")
    cfg = compose_config(tmp_path, ["dataset=mnist"])
    assert cfg.dataset.loader.root == "/somewhere/data"
    assert Path(compose_config(tmp_path, ["dataset=mnist", "paths.data_dir=/x"]).dataset.loader.root) == Path("/x")


def test_topology_is_part_of_a_runs_identity(tmp_path):
    from anomaly.config import config_hash
    from anomaly.provenance import result_config

    one = compose_config(tmp_path, [])
    assert result_config(one)["topology"] == {"world_size": 1}
    # one process on another device, or with settings that only matter to several: the same run
    assert config_hash(compose_config(tmp_path, ["+trainer.sync_batchnorm=true"])) == config_hash(one)
    two = compose_config(tmp_path, ["trainer=ddp_cpu"])
    assert result_config(two)["topology"] == {"world_size": 2, "strategy": "ddp", "sync_batchnorm": False}
    two_nodes = compose_config(tmp_path, ["trainer=ddp_cpu", "trainer.num_nodes=2"])
    synced = compose_config(tmp_path, ["trainer=ddp_cpu", "+trainer.sync_batchnorm=true"])
    hashes = {config_hash(c) for c in (one, two, two_nodes, synced)}
    assert len(hashes) == 4  # ckpt_path=last never resumes across them, the report never averages them


def test_the_config_hash_is_the_sha256_of_omegaconfs_yaml_of_the_identity(tmp_path):
    """Kept results are matched by this hash: it stays the hash of `OmegaConf.to_yaml` of the
    identity, whatever the values look like to YAML (strings that read as numbers, booleans or
    null, unicode, nested lists)."""
    import hashlib

    from omegaconf import OmegaConf

    from anomaly.config import config_hash
    from anomaly.provenance import result_config

    identity = result_config(compose_config(tmp_path, ["method=gpnd"]))
    identity.pop("topology")
    identity["dataset"]["odd"] = {"number": "1.0", "truth": "yes", "none": "null", "name": "Überzieher", "lists": [[1, 2.5], []],
                                  "empty": "", "multi": "a\nb", "colon": "a: b"}
    expected = hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(identity)).encode()).hexdigest()[:12]
    assert config_hash(None, identity) == expected

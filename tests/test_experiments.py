"""Every paper setup in conf/experiment/ composes and runs one tiny step (trainer.fast_dev_run)
on generated files in its dataset's real format."""

import pytest
import yaml

from anomaly.pipeline import train
from tests.conftest import CONF_DIR, TINY, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))

# overrides an experiment needs to fit the tiny generated data sets (key: experiment name)
EXTRA: dict[str, list[str]] = {
    # the published 4,000 / 800 / 800 normals do not fit; 30 % impurities leave some in the test
    "vae_emnist": ["protocol.contamination=0.3"],
    "vae_mnist_contamination": ["protocol.n_train=null", "protocol.n_val=null", "protocol.n_test=null",
                                "protocol.contamination=0.3"],
    "vae_fashion_mnist_contamination": ["protocol.n_train=null", "protocol.n_val=null", "protocol.n_test=null",
                                        "protocol.contamination=0.3"],
    # one search / training step instead of the papers' Γ = 500 per image and 150 epochs
    "anogan_mnist": ["method.search_steps=2"],
    "fanogan_mnist": ["method.gan_epochs=1", "method.encoder_epochs=1", "trainer.max_epochs=2"],
}


@pytest.fixture(scope="module")
def data_root(every_dataset_root):
    return every_dataset_root


def group_options(name: str) -> dict[str, str]:
    """The `override /group: option` entries of an experiment's defaults list."""
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    options = {}
    for entry in yaml.safe_load(text).get("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                options[key.split("/")[-1].strip()] = option
    return options


def test_experiments_are_global_packages_naming_their_paper():
    for name in EXPERIMENTS:
        text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_"), name


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_tiny_step(tmp_path, data_root, name):
    cfg = compose_config(tmp_path, [f"experiment={name}", *TINY, f"paths.data_dir={data_root}",
                                    "+trainer.fast_dev_run=true", "data.eval_batch_size=16",
                                    *EXTRA.get(name, [])])
    if "download" in cfg.dataset.loader:
        cfg.dataset.loader.download = False  # generated files only, never the network
    results = train(cfg)
    assert results["dataset"] == cfg.dataset.name and results["method"] == group_options(name)["method"]
    assert results["status"] in ("ok", "invalid_scores"), results
    assert (tmp_path / "results.json").is_file() and (tmp_path / "split.npz").is_file()

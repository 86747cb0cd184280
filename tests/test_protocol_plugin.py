"""Adding a protocol is one module plus one config: a protocol defined outside the package (a
module in a temporary folder, its config in a temporary `protocol/` config folder on Hydra's
search path) is composed, checked and builds its split through the normal path, with nothing in
`anomaly/` or `conf/` edited. The shipped protocols follow the same layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.utils import get_class

from anomaly import config_schema
from anomaly.data.protocols.base import Protocol
from anomaly.loggers import run_name
from anomaly.pipeline import build_datamodule, protocol_summary
from tests.conftest import CONF_DIR, compose_config

PLUGIN_MODULE = "plugin_protocol_every_other"

# a protocol of one's own, written as a user would: a split function and a Protocol class
PLUGIN_SOURCE = '''
"""every_other: seeded halves of each normal class for train / test, a tenth of the training half
for validation; the anomalous classes split between validation and test."""

import numpy as np

from anomaly.data.protocols.base import Protocol, Split, check_fraction


def every_other_split(labels, normal, test_fraction=0.5, seed=0):
    rng = np.random.default_rng(seed)
    is_normal = np.isin(labels, normal)
    train, val, test = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if c in normal:
            n_test = int(round(test_fraction * len(idx)))
            n_val = max(1, len(idx[n_test:]) // 10)
            test.append(idx[:n_test])
            val.append(idx[n_test:n_test + n_val])
            train.append(idx[n_test + n_val:])
        else:
            val.append(idx[:len(idx) // 2])
            test.append(idx[len(idx) // 2:])
    train, val, test = (np.sort(np.concatenate(p)) for p in (train, val, test))
    return Split(train=train, val=val, test=test, train_anomalous=~is_normal[train],
                 val_anomalous=~is_normal[val], test_anomalous=~is_normal[test],
                 normal_classes=list(normal))


class EveryOther(Protocol):
    name = "every_other"

    def __init__(self, normal=None, test_fraction=0.5, seed=0, anomalous=None):
        super().__init__(normal, seed, anomalous)
        self.test_fraction = check_fraction("protocol.test_fraction", test_fraction)

    def _split(self, data, normal):
        return every_other_split(data.labels.numpy(), normal, self.test_fraction, self.seed)
'''

# its config, as conf/protocol/<name>.yaml would hold it (threshold: its paper's, f1_inlier)
PLUGIN_CONFIG = f"""
defaults:
  - override /threshold@_global_.threshold: f1_inlier
_target_: {PLUGIN_MODULE}.EveryOther
normal: null
anomalous: null
test_fraction: 0.5
seed: ${{seed}}
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> Path:
    """The plugin's module importable and its config folder (holding protocol/every_other.yaml)."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    conf_dir = tmp_path / "conf"
    (conf_dir / "protocol").mkdir(parents=True)
    (conf_dir / "protocol" / "every_other.yaml").write_text(PLUGIN_CONFIG)
    monkeypatch.syspath_prepend(str(code_dir))
    monkeypatch.delitem(sys.modules, PLUGIN_MODULE, raising=False)  # restored (absent) afterwards
    return conf_dir


def compose_with_plugin(conf_dir: Path, out: Path, *overrides: str):
    return compose_config(out, [f"hydra.searchpath=[file://{conf_dir}]", "protocol=every_other",
                                "dataset=digits", *overrides])


def test_a_protocol_outside_the_package_builds_its_split_through_the_normal_path(plugin, tmp_path):
    cfg = compose_with_plugin(plugin, tmp_path / "run", "protocol.normal=[3]", "seed=4")
    assert cfg.protocol._target_ == f"{PLUGIN_MODULE}.EveryOther"
    assert cfg.protocol.seed == 4
    assert cfg.threshold.positive == "normal"  # the plugin config's defaults list applied
    config_schema.check_train(cfg)  # the config check knows no list of protocols

    dm = build_datamodule(cfg)
    dm.setup()
    split, labels = dm.split, dm.data.labels.numpy()
    assert type(dm.protocol).__module__ == PLUGIN_MODULE
    assert set(labels[split.train]) == {3} and not split.train_anomalous.any()
    assert split.val_anomalous.any() and split.test_anomalous.any()
    np.testing.assert_array_equal(split.test_anomalous, labels[split.test] != 3)
    parts = np.concatenate([split.train, split.val, split.test])
    assert len(np.unique(parts)) == len(parts) == len(labels)  # disjoint, every image used
    # what a run records about its protocol
    summary = protocol_summary(dm)
    assert summary["name"] == "every_other" and summary["normal_ids"] == [3]
    assert summary["test_fraction"] == 0.5
    assert run_name("ae", "digits", dm.protocol, 4) == "ae-digits-every_other-n3-s4"

    # the same seed gives the same split, another seed another one
    again = build_datamodule(compose_with_plugin(plugin, tmp_path / "again", "protocol.normal=[3]", "seed=4"))
    again.setup()
    np.testing.assert_array_equal(again.split.test, split.test)
    other = build_datamodule(compose_with_plugin(plugin, tmp_path / "other", "protocol.normal=[3]", "seed=5"))
    other.setup()
    assert not np.array_equal(other.split.test, split.test)


def test_the_plugin_takes_the_shared_class_settings(plugin, tmp_path):
    """`anomalous` and class names work for it as for the shipped protocols (the base class)."""
    cfg = compose_with_plugin(plugin, tmp_path / "run", "protocol.anomalous=[0]")
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.split.normal_classes == list(range(1, 10))
    assert set(dm.data.labels.numpy()[dm.split.test[dm.split.test_anomalous]]) == {0}


def test_a_protocol_needs_no_config_file_either(plugin, tmp_path):
    """Without a config of its own: the protocol node given on the command line."""
    cfg = compose_config(tmp_path / "run", ["dataset=digits", "~protocol",
                                            f"+protocol._target_={PLUGIN_MODULE}.EveryOther",
                                            "+protocol.normal=[2]", "+protocol.test_fraction=0.3"])
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.protocol.name == "every_other" and dm.protocol.test_fraction == 0.3
    assert dm.split.normal_classes == [2]


@pytest.mark.parametrize("config", sorted((CONF_DIR / "protocol").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_shipped_protocol_is_one_module_and_one_config(config):
    """conf/protocol/<name>.yaml targets anomaly.data.protocols.<name>.<Class>, whose name is
    <name>; the package-level name (configs and checkpoints written before the split into
    modules) resolves to the same class."""
    target = yaml.safe_load(config.read_text())["_target_"]
    module, cls_name = target.rsplit(".", 1)
    assert module == f"anomaly.data.protocols.{config.stem}"
    cls = get_class(target)
    assert issubclass(cls, Protocol) and cls.name == config.stem
    assert get_class(f"anomaly.data.protocols.{cls_name}") is cls

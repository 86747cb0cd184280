"""CONTRIBUTING.md's two worked examples, run as they are written there: its code blocks marked
`<!-- file: PATH -->` written to a temporary folder, the new method trained through the real
config, and the backbone swap's commands trained as given."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

import anomaly.methods
from anomaly import AnomalyError
from anomaly.config_schema import ConfigError, check_train
from anomaly.pipeline import build_method, train
from tests.conftest import TINY, compose_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "CONTRIBUTING.md").read_text()
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<text>.*?)```", re.S)
SHORT = [*TINY, "dataset=mnist", "dataset.loader.download=false", "dataset.image_size=16", "protocol.normal=[3]",
         "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none"]

NARROW_GPND = ["dataset.image_size=32", "method.latent_dim=8", "method.generator.widths=[16,16,8]",
               "method.encoder.widths=[8,16,16]", "method.discriminator.widths=[8,16,16]",
               "method.latent_discriminator.hidden=[16,16]"]


def guide_commands(heading: str) -> list[list[str]]:
    """The overrides of each `python -m anomaly.train …` line in the section under `heading`."""
    section = GUIDE.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line)[3:] for line in section.splitlines() if line.startswith("python -m anomaly.train ")]


@pytest.fixture
def guide_files(tmp_path, monkeypatch) -> Path:
    """The guide's files under tmp_path, importable where they say they live: the method module
    as anomaly.methods.<name>, my_nets on sys.path; the configs on Hydra's search path."""
    files = {m["path"]: m["text"] for m in FILE_BLOCK.finditer(GUIDE)}
    assert set(files) == {"anomaly/methods/sparse_ae.py", "conf/method/sparse_ae.yaml", "my_nets.py"}
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(anomaly.methods, "__path__", [*anomaly.methods.__path__, str(tmp_path / "anomaly/methods")])
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("anomaly.methods.sparse_ae", "my_nets"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return tmp_path


def test_the_worked_method_trains_and_its_new_setting_is_declared_once(guide_files, tmp_path, mnist_root):
    search = f"hydra.searchpath=[file://{guide_files / 'conf'}]"
    base = [*SHORT, search, f"paths.data_dir={mnist_root}", "method=sparse_ae"]
    # the one declaration: refused before any data loads, in the guide's words
    with pytest.raises(ConfigError, match=re.escape("method.sparsity=-1: must be a number ≥ 0")):
        check_train(compose_config(tmp_path / "bad", [*base, "method.sparsity=-1"]))
    assert "error: method.sparsity=-1: must be a number ≥ 0" in GUIDE
    cfg = compose_config(tmp_path / "run", [*base, "method.sparsity=0.01"])
    method = build_method(cfg, None, image_shape=(1, 16, 16))
    assert type(method).__name__ == "SparseAutoencoder" and method.sparsity == 0.01
    results = train(cfg)
    assert results["status"] == "ok" and results["method"] == "sparse_ae"
    assert 0.0 <= results["metrics"]["auroc"] <= 1.0 and "threshold" in results["metrics"]


def test_the_worked_backbone_swaps_train_and_a_net_that_does_not_fit_is_refused(guide_files, tmp_path, mnist_root):
    commands = guide_commands("A worked example: a backbone of your own")
    assert len(commands) == 2 and all(c[0] == "method=gpnd" for c in commands)
    for overrides, slot in zip(commands, ("encoder", "image_discriminator")):
        # GPND's conv nets take 32×32 images; narrow ones keep the test short
        cfg = compose_config(tmp_path / slot, [*SHORT, f"paths.data_dir={mnist_root}", *NARROW_GPND, *overrides])
        method = build_method(cfg, None, image_shape=(1, 32, 32))
        net = getattr(method, slot)
        assert type(net).__name__ == "StridedEncoder" and net.body[0].out_channels == 8
        results = train(cfg)
        assert results["status"] == "ok", results.get("error")
    # the default net's setting left in: refused in one line naming the slot and the class
    cfg = compose_config(tmp_path / "bad", [*SHORT, f"paths.data_dir={mnist_root}", *NARROW_GPND,
                                            *[o for o in commands[0] if not o.startswith("~")]])
    with pytest.raises(AnomalyError, match=r"method=gpnd: method.encoder=my_nets.StridedEncoder does not take what "
                                           r"the method builds it with \(image_shape, out_features\): .*'widths'"):
        build_method(cfg, None, image_shape=(1, 32, 32))

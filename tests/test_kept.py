"""A kept result is the result of its command and nothing else passes for it: its identity holds
its data, `reproduce --status` says when a command now makes another config, a kept result of
another config or data is never skipped, resumed or replaced without rerun=true, two invocations
take a training in turn, kept commands carry no machine paths, and a refused setting leaves
nothing behind."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomaly.checkpoints import newest_checkpoint
from anomaly.provenance import cpu_command
from anomaly.reproduce import kept as kept_results
from anomaly.reproduce.cli import load_tables, run_suffix
from anomaly.reproduce.status import main as status
from tests.conftest import CONF_DIR
from tests.helpers import cli
from tests.test_reproduce import ae_table, run_cells

REPO = CONF_DIR.parent


@pytest.fixture(scope="module")
def data_root(every_dataset_root):
    return every_dataset_root


def test_results_record_their_data_code_and_a_command_without_machine_paths(tmp_path, data_root):
    table = ae_table([], {"variant": ["ae"]})
    (result,) = run_cells(tmp_path, table, table.cells(), data_root, kept=tmp_path / "kept")
    assert set(result["data_fingerprint"]) == {"train", "val", "test"}
    assert result["code"]["version"] and re.fullmatch(r"[0-9a-f]{40}", result["code"]["commit"])
    assert isinstance(result["code"]["dirty"], bool)
    assert "paths." not in result["command"] and "trainer.enable_progress_bar" not in result["command"]
    assert result["command_paths"]["data_dir"] == str(data_root)  # beside the command, not in it
    kept = json.loads((tmp_path / "kept" / "t" / "smoke" / "ae" / "results.json").read_text())
    assert kept["data_fingerprint"] == result["data_fingerprint"]


def test_a_kept_result_of_other_data_is_refused_until_rerun_stale(tmp_path, data_root):
    table = ae_table([], {"variant": ["ae"]})
    kept = tmp_path / "kept"
    run_cells(tmp_path / "a", table, table.cells(), data_root, kept=kept)
    path = kept / "t" / "smoke" / "ae" / "results.json"
    (again,) = run_cells(tmp_path / "b", table, table.cells(), data_root, kept=kept)
    assert again.get("skipped")  # the same config on the same images: skipped

    record = json.loads(path.read_text())
    record["data_fingerprint"]["test"] = "another copy"  # made on other files at the same paths
    path.write_text(json.dumps(record))
    (refused,) = run_cells(tmp_path / "c", table, table.cells(), data_root, kept=kept)
    assert refused["status"] == "refused" and "test images" in refused["error"]
    assert not (tmp_path / "c" / "runs").exists()  # nothing trained
    assert json.loads(path.read_text())["data_fingerprint"]["test"] == "another copy"  # nothing replaced

    GlobalHydra.instance().clear()
    from anomaly.reproduce.runner import run_group
    from tests.test_reproduce import QUIET

    user = [*QUIET, f"paths.data_dir={data_root}", "dataset.loader.download=false", "data.batch_size=32",
            "dataset.image_size=16"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        (made,) = run_group(table, table.cells(), "smoke", user, tmp_path / "d" / "runs", kept, rerun="stale")
    assert made["status"] == "ok" and json.loads(path.read_text())["data_fingerprint"] == made["data_fingerprint"]


def test_keep_results_replaces_another_config_only_with_rerun(tmp_path):
    def run(name: str, **fields) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        data = {"status": "ok", "config_hash": "aaa", "metrics": {"auroc": 0.9}, "debug": None,
                "data_fingerprint": {"train": "t", "val": "v", "test": "x"}, "created": "2026-12-04T10:00:00+00:00",
                **fields}
        (folder / "results.json").write_text(json.dumps(data))
        return folder

    target = tmp_path / "kept" / "cell"
    assert kept_results.keep_results(run("r0"), target) == "kept"
    assert kept_results.keep_results(run("r1", config_hash="bbb", metrics={"auroc": 0.7}), target) == "refused"
    assert kept_results.keep_results(run("r2", data_fingerprint={"train": "t", "val": "v", "test": "y"}),
                                     target) == "refused"
    assert json.loads((target / "results.json").read_text())["metrics"] == {"auroc": 0.9}
    assert kept_results.keep_results(run("r3", config_hash="bbb", metrics={"auroc": 0.7}), target, rerun=True) \
        == "replaced"
    # two runs of the kept config with other numbers at the same second: two files beside it
    assert kept_results.keep_results(run("r4", config_hash="bbb", metrics={"auroc": 0.6}), target) == "beside"
    assert kept_results.keep_results(run("r5", config_hash="bbb", metrics={"auroc": 0.5}), target) == "beside"
    assert len(list(target.glob("results.differs-*.json"))) == 2


def test_a_checkpoint_of_the_same_config_on_other_data_is_not_resumed(tmp_path):
    ours = {"train": "a", "val": "b", "test": "c"}

    def checkpoint(name: str, fingerprint: dict | None) -> Path:
        path = tmp_path / name / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": {}, "anomaly": {"config_hash": "h", "data_fingerprint": fingerprint}}, path)
        return path

    checkpoint("ours", ours)
    time.sleep(0.01)
    checkpoint("other", {**ours, "train": "z"})  # newer, but of other training images
    assert newest_checkpoint(tmp_path, "h", ours).parent.parent.name == "ours"
    assert newest_checkpoint(tmp_path, "h", {**ours, "val": "q"}) is None
    time.sleep(0.01)
    checkpoint("legacy", None)  # written before fingerprints: taken on its config alone
    assert newest_checkpoint(tmp_path, "h", ours).parent.parent.name == "legacy"


def test_every_override_beside_the_grid_names_its_own_cell_folder():
    table = next(t for t in load_tables("gpnd_mnist"))
    cell = table.cells()[0]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        assert run_suffix(table, cell, "reduced", ["threshold=quantile"]) == "-threshold_quantile"
        assert run_suffix(table, cell, "reduced", ["threshold=f1_inlier"]) == ""  # the protocol's own
        assert run_suffix(table, cell, "reduced", ["threshold=quantile", "threshold.quantile=0.9"]) == \
            "-threshold_quantile-threshold.quantile0.9"


def test_kept_commands_run_anywhere():
    table = ae_table([], {"variant": ["ae"]})
    (cell,) = table.cells()
    command = table.command(cell, "paper", ["paths.data_dir=/x/y", "paths.log_dir=/z", "threads=1", "jobs=2",
                                            "hydra.run.dir=/r", "trainer=gpu", "method.lr=0.1"])
    assert command == "python -m anomaly.reproduce table=t budget=paper variant=ae threads=1 trainer=gpu method.lr=0.1"
    assert cpu_command(command) == command.replace("trainer=gpu", "trainer=cpu")
    assert cpu_command(command.replace(" trainer=gpu", "")) is None


def test_status_exits_1_naming_a_changed_default(tmp_path, monkeypatch, capsys):
    """A kept cell is ok against today's config; once a default of its method changes, --status
    names the key with both values and exits 1 (as git diff --exit-code)."""
    import anomaly.provenance
    import anomaly.reproduce.cli

    kept = tmp_path / "kept" / "fanogan_mnist" / "reduced" / "normal0"
    kept.mkdir(parents=True)
    shutil.copy(REPO / "reproduced" / "fanogan_mnist" / "reduced" / "normal0" / "results.json", kept)
    arguments = ["--status", "--no-data", "table=fanogan_mnist", f"results_dir={tmp_path / 'kept'}"]
    assert status(arguments) == 0
    assert "fanogan_mnist / reduced" in capsys.readouterr().out

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    method = conf / "method" / "fanogan.yaml"
    method.write_text(method.read_text().replace("feature_weight: 1.0", "feature_weight: 2.0"))
    monkeypatch.setattr(anomaly.provenance, "CONF_DIR", conf)
    monkeypatch.setattr(anomaly.reproduce.cli, "CONF_DIR", conf)
    assert status(arguments) == 1
    out = capsys.readouterr().out
    assert "method.feature_weight: 1.0 → 2.0" in out and "1 stale cell" in out
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.slow
def test_two_invocations_take_one_training_in_turn(tmp_path, data_root):
    """While another process holds a training group (its lock), a second invocation waits, then
    finds the first one's result kept and trains nothing."""
    table = ae_table([], {"variant": ["ae"]})
    kept = tmp_path / "kept"
    (first,) = run_cells(tmp_path / "a", table, table.cells(), data_root, kept=kept)
    target = kept / "t" / "smoke" / "ae"
    (target / "results.json").rename(tmp_path / "staged.json")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, shutil; from anomaly.reproduce.kept import lock; g = lock(__import__('pathlib').Path(sys.argv[1]));"
         " g.acquire(); print('held', flush=True); time.sleep(3); shutil.move(sys.argv[2], sys.argv[1] + '/results.json');"
         " g.release()", str(target), str(tmp_path / "staged.json")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    (second,) = run_cells(tmp_path / "b", table, table.cells(), data_root, kept=kept)
    assert holder.wait(timeout=30) == 0
    assert time.monotonic() - start >= 2  # it waited for the holder
    assert second.get("skipped") and second["metrics"] == first["metrics"]
    assert not (tmp_path / "b" / "runs").exists()  # and trained nothing


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["anomaly.train", "anomaly.reproduce"])
def test_a_refused_setting_leaves_nothing(tmp_path, entry):
    words = ["threshold=quantile", "threshold.quantile=1.5", f"paths.log_dir={tmp_path}"]
    if entry == "anomaly.reproduce":
        words += ["table=gpnd_mnist", "budget=smoke", "protocol.normal=[0]", "protocol.fold=0",
                  f"results_dir={tmp_path / 'kept'}"]
    proc = cli.run(entry, words, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: threshold.quantile=1.5 must be in (0, 1)"
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no run dir, no failed results.json


def test_older_code_counts_the_commits_not_listed_as_changing_no_number(tmp_path):
    """--status's "older code": a method file changed since a cell's commit, by a commit that
    reproduced/numbers_neutral_commits.txt does not list, or in the working tree."""
    import subprocess

    from anomaly.reproduce.status import CodeCheck, neutral_commits

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    method = tmp_path / "method.py"
    commits = []
    for text in ("a = 1\n", "a = 1  # moved\n", "a = 2\n"):
        method.write_text(text)
        git("add", "method.py")
        git("commit", "-q", "-m", text)
        commits.append(git("rev-parse", "HEAD"))
    kept_at, structure, numbers = commits
    assert CodeCheck({structure}, tmp_path).changed(kept_at, ["method.py"]) == ["method.py"]  # `numbers` is not listed
    assert CodeCheck({structure, numbers}, tmp_path).changed(kept_at, ["method.py"]) == []
    assert CodeCheck(set(), tmp_path).changed(numbers, ["method.py"]) == []  # kept at the last commit
    method.write_text("a = 3\n")  # an edit not committed yet
    assert CodeCheck({structure, numbers}, tmp_path).changed(kept_at, ["method.py"]) == ["method.py"]
    assert CodeCheck(set(), tmp_path).changed("0" * 40, ["method.py"]) == []  # a commit this clone lacks
    # the kept list: full hashes, each with its evidence
    listed = neutral_commits()
    assert listed and all(len(c) == 40 for c in listed)


def test_fill_describes_a_kept_cell_by_the_published_settings_its_config_names_today(tmp_path):
    """The union cells of arae_mnist_p2 were kept while their runs named the L∞ model's 1,600
    passes as their published schedule; `--status --fill` re-describes a cell whose command still
    composes its kept config (the union's own 500 epochs, a whole schedule) and leaves its numbers."""
    from anomaly.reproduce.status import fill_identity

    cell = Path(__file__).resolve().parents[1] / "reproduced/arae_mnist_p2/paper/arae_union-normal8"
    kept = json.loads((cell / "results.json").read_text())
    old = {**kept["paper_settings"], "keys": {**kept["paper_settings"]["keys"], "trainer.max_epochs": 1600},
           "overridden": {"trainer.max_epochs": 500, "data.batch_size": 128}}
    kept["paper_settings"] = old
    kept["cost"]["stages"]["train"]["published"], kept["cost"]["schedule_share"] = 1600, 500 / 1600
    copy = tmp_path / "arae_mnist_p2" / "paper" / cell.name
    copy.mkdir(parents=True)
    (copy / "results.json").write_text(json.dumps(kept))
    assert fill_identity(tmp_path, "arae_mnist_p2")["described"] == 1
    now = json.loads((copy / "results.json").read_text())
    assert now["paper_settings"]["keys"]["trainer.max_epochs"] == 500 and now["paper_settings"]["overridden"] == {}
    assert now["cost"]["stages"]["train"]["published"] == 500 and now["cost"]["schedule_share"] == 1.0
    assert now["metrics"] == kept["metrics"] and now["config_hash"] == kept["config_hash"]
    assert fill_identity(tmp_path, "arae_mnist_p2")["described"] == 0


@pytest.mark.slow
def test_fill_records_the_fingerprint_of_the_data_a_kept_cell_draws_here(tmp_path, data_root, monkeypatch):
    """A cell kept before data were fingerprinted: `--status --fill` records the fingerprint of the
    data its command draws here, where the split it draws is the kept one (its training indices'
    hash and sizes), and leaves a cell whose split differs unverified, untouched."""
    from anomaly.reproduce.status import fill_identity
    from tests.test_reproduce import QUIET, run_app

    (made,) = run_app(tmp_path, ["table=benchmark_mnist", "budget=reduced", "variant=ocsvm", "protocol.normal=[3]",
                                 *QUIET, f"paths.data_dir={data_root}", "dataset.loader.download=false",
                                 "protocol.n_test=40"])
    (path,) = (tmp_path / "kept" / "benchmark_mnist" / "reduced").glob("*/results.json")
    kept = json.loads(path.read_text())
    assert kept["data_fingerprint"] == made["data_fingerprint"] and kept["dataset_size"]
    older = {k: v for k, v in kept.items() if k not in ("data_fingerprint", "dataset_size")}
    path.write_text(json.dumps(older))
    monkeypatch.setenv("ANOMALY_DATA_DIR", str(data_root))  # the data dir is not in a kept command
    assert fill_identity(tmp_path / "kept", "benchmark_mnist")["filled"] == 1
    filled = json.loads(path.read_text())
    assert filled["data_fingerprint"] == kept["data_fingerprint"] and filled["dataset_size"] == kept["dataset_size"]
    assert filled["metrics"] == kept["metrics"]
    # a split drawn here that is not the kept one (its training indices differ): not filled
    path.write_text(json.dumps({**older, "train_hash": "0" * 16}))
    counts = fill_identity(tmp_path / "kept", "benchmark_mnist")
    assert counts["filled"] == 0 and counts["unverified"] == 1
    assert "data_fingerprint" not in json.loads(path.read_text())

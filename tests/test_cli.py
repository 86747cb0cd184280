"""The entry points as a user meets them: bad input exits non-zero with one clear line."""

import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli


def run(module: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    quiet = ["print_config=false", "trainer.enable_progress_bar=false"] if module == "anomaly.train" else []
    return cli.run(module, [*overrides, *quiet], cwd=cwd)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("override, names", [
    ("protocol.normal=[12]", "unknown class 12"),
    ("protocol.normal=[]", "protocol.normal is empty"),
    ("protocol=anomaly_ratio protocol.anomaly_ratio=1.5", "protocol.anomaly_ratio=1.5 must be in (0, 1)"),
])
def test_bad_input_exits_with_one_line(tmp_path, override, names):
    proc = run("anomaly.train", *override.split(), f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert names in error_line(proc)
    assert "Epoch" not in proc.stdout + proc.stderr  # refused before any training


@pytest.mark.slow
def test_missing_dataset_names_where_files_belong(tmp_path):
    proc = run("anomaly.train", "dataset=mnist", f"paths.data_dir={tmp_path / 'nowhere'}",
               "dataset.loader.download=false", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    line = error_line(proc)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in line and "train-images-idx3-ubyte" in line


@pytest.mark.parametrize("module, args, line", [
    ("anomaly.train", ["method=nope"], "error: method=nope: no such option (options: adae, ae, anogan, "),
    ("anomaly.train", ["method=area"], "error: method=area: no such option; did you mean arae or ae?"),
    ("anomaly.train", ["trainer.max_epoch=3"], "error: trainer.max_epoch: no such setting; did you mean "
                                               "trainer.max_epochs or trainer.min_epochs?"),
    # a sweep: checked at the first value of each swept key
    ("anomaly.train", ["-m", "seed=0,1", "method=ae,gpnd", "methd.lr=1"],
     "error: methd.lr: no such setting; did you mean method.lr?"),
    ("anomaly.train", ["trainer.max_epochs=[1"], "error: no viable alternative at input '[1'"),
    # a {…} value merges into its node: the key the node lacks, and how to replace the node whole
    ("anomaly.train", ["method.encoder={_target_:my_nets.Net,_partial_:true,width:8}"],
     "error: method.encoder.width: no such setting in method.encoder (method.encoder={…} merges into it; to "
     "replace it whole: '~method.encoder' '+method.encoder={…}')"),
    ("anomaly.reproduce", ["table=gpnd_mnst"], "error: table=gpnd_mnst: no such option; did you mean gpnd_mnist"),
])
def test_hydras_refusals_are_one_line_with_a_suggestion_and_exit_2(tmp_path, module, args, line):
    # quick: refused before torch and Lightning load
    proc = run(module, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith(line), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "+trainer" not in proc.stderr.split(";")[0]


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(tmp_path):
    logs = tmp_path / ("a_long_folder_name_" * 4)  # run dirs longer than a terminal line
    proc = run("anomaly.train", "trainer.max_epochs=2", f"paths.log_dir={logs}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "AUROC" in proc.stdout and "run dir:" in proc.stdout
    assert "💡" not in proc.stdout + proc.stderr  # Lightning's advertising tips are dropped
    ckpts = list((logs / "runs" / "ae" / "digits").glob("*/checkpoints/last.ckpt"))
    assert len(ckpts) == 1
    run_dir = ckpts[0].parent.parent
    assert f"run dir: {run_dir}" in proc.stdout  # the path whole, on one line
    # the run's log holds what the run showed: the config tree, Lightning's lines, the results
    text = (run_dir / "train.log").read_text()
    assert "├── method" in text and f"output_dir: {run_dir}" in text
    assert "`Trainer.fit` stopped" in text and "│ AUROC " in text and f"run dir: {run_dir}" in text
    assert "💡" not in text
    # evaluate takes train's runtime keys (threads)
    proc = run("anomaly.evaluate", f"ckpt_path={ckpts[0]}", f"paths.log_dir={logs}", "threads=1",
               "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "💡" not in proc.stdout + proc.stderr
    assert list((logs / "evaluate").glob("*/results.json"))


@pytest.mark.slow
def test_a_run_starts_with_what_runs_and_an_error_comes_before_any_config(tmp_path):
    command = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none", f"paths.log_dir={tmp_path}"]
    ok = cli.run("anomaly.train", command, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    shown = ok.stdout + ok.stderr
    # (before it, at most the thread count chosen for a busy machine)
    first = next(line for line in shown.splitlines() if "[anomaly]" in line and "threads=" not in line)
    assert "train ae on digits · one_class · seed 0 → " + str(tmp_path) in first
    assert "├── method" not in shown  # the config tree goes to the run dir only…
    (tree,) = tmp_path.glob("runs/ae/digits/*/config_tree.log")
    assert "├── method" in tree.read_text()
    assert "F1 (anomalies positive)" in ok.stdout and "threshold " in ok.stdout
    # …and with print_config=true a refusal still comes before any of it
    bad = cli.run("anomaly.train", [*command, "print_config=true", "protocol.normal=[12]"], cwd=tmp_path)
    assert bad.returncode == 2
    assert "├── method" not in bad.stdout + bad.stderr and "error: protocol.normal: unknown class 12" in bad.stderr


def test_a_forked_command_behaves_as_a_fresh_interpreter(tmp_path):
    """tests.helpers.cli (the command-line tests' fork server) against `subprocess.run`: the same
    exit status, stdout, stderr, working directory, environment and `atexit` output, and a death
    by signal is the negative signal number."""
    import signal
    import sys

    code = ("import atexit, os, sys\n"
            "atexit.register(lambda: print('atexit ran', flush=True))\n"
            "print(os.getcwd(), os.environ.get('PROBE'), sys.argv[1:])\n"
            "print('to stderr', file=sys.stderr)\n"
            "sys.exit(int(sys.argv[1]))\n")
    env = {"PROBE": "42", "PATH": "/usr/bin:/bin"}
    forked = cli.run("-c", [code, "3"], cwd=tmp_path, env=env)
    fresh = subprocess.run([sys.executable, "-c", code, "3"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == 3 and forked.stdout.splitlines() == [f"{tmp_path} 42 ['3']", "atexit ran"]
    killed = cli.run("-c", ["import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], cwd=tmp_path)
    assert killed.returncode == -signal.SIGTERM
    assert cli.run("-c", ["raise ValueError('x')"], cwd=tmp_path).stderr.strip().endswith("ValueError: x")

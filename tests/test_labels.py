"""What a number is, said where it is shown: the data's own size (a subset of the release says so
when it loads, in results.json and beside ours-vs-paper numbers), and a run's log that is no
terminal gets a line per epoch, not a bar's carriage returns."""

import logging

import pytest

from anomaly.data.datasets import load_mnist
from anomaly.provenance import subset_line
from tests.conftest import CONF_DIR
from tests.helpers import cli
from tests.helpers.formats import write_mnist_like


def test_a_subset_of_the_release_says_so_when_it_loads(tmp_path, caplog):
    write_mnist_like(tmp_path, n_train_per_class=3, n_test_per_class=2)
    with caplog.at_level(logging.INFO, logger="anomaly"):
        data = load_mnist(tmp_path, download=False)
    assert data.size() == {"train": 30, "test": 20, "official": {"train": 60000, "test": 10000}}
    assert subset_line(data.size()) == "30 of the official 60,000 training images; 20 of the official 10,000 test images"
    assert "dataset mnist: 30 of the official 60,000 training images" in caplog.text
    whole = {"train": 60000, "test": 10000, "official": {"train": 60000, "test": 10000}}
    assert subset_line(whole) is None and subset_line({"all": 7168, "official": None}) is None


def test_the_report_says_the_data_size_beside_ours_against_the_paper():
    from anomaly.report.render import data_line

    class Run:
        dataset_size = {"train": 10000, "test": 10000, "official": {"train": 60000, "test": 10000}}

    assert data_line([Run(), Run()]) == "data: 10,000 of the official 60,000 training images here; the paper: all"
    Run.dataset_size = None  # results kept before the size was recorded: nothing is claimed
    assert data_line([Run()]) is None


@pytest.mark.slow
def test_a_log_that_is_no_terminal_gets_a_line_per_epoch(tmp_path):
    proc = cli.run("anomaly.train", ["trainer.max_epochs=3", "logger=none", "print_config=false",
                                     "callbacks.progress_bar.line_seconds=0", f"paths.log_dir={tmp_path}"],
                   cwd=CONF_DIR.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "\r" not in out  # no bar redrawn in place
    assert [line.split(" - ", 1)[1].split(" · ")[0] for line in out.splitlines() if " - epoch " in line] == \
        ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_the_paper_settings_line_says_which_model_an_experiment_trains():
    from anomaly.config import compose
    from anomaly import provenance

    cfg = compose(CONF_DIR.parent / "outputs", ["experiment=arae_mnist_p2"])
    line = provenance.paper_line(provenance.paper_settings(cfg))
    assert "this run trains the published PyTorch union model" in line and cfg.method.attack == "union"


def test_train_help_lists_its_own_config_groups_only():
    def groups(entry: str) -> set[str]:
        proc = cli.run(entry, ["--help"], cwd=CONF_DIR.parent)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {line.split(":", 1)[0] for line in proc.stdout.splitlines() if ": " in line}

    train = groups("anomaly.train")
    assert {"method", "dataset", "protocol", "threshold"} <= train and "table" not in train
    assert "table" in groups("anomaly.reproduce")  # where the tables are chosen


def test_the_table_runner_never_sets_one_class_against_a_mean_over_classes():
    from anomaly.reproduce.runner import comparison_rows
    from anomaly.reproduce.tables import Table

    def table(where: dict) -> Table:
        return Table(name="t", source="s", metric="auroc", grid={}, test_keys=[], paper=[{"where": where, "auroc": 0.93}],
                     budgets={"paper": {}, "reduced": {}, "smoke": {}})

    result = {"status": "ok", "metrics": {"auroc": 0.90}, "epochs": 6,
              "paper_settings": {"keys": {"trainer.max_epochs": 80}},
              "reproduce": {"cell": {"protocol.normal": [3], "protocol.outlier_ratio": 0.5}, "paper": {"auroc": 0.93}}}
    # GPND's numbers are per outlier share, means over the digits: no Δ for digit 3 alone
    assert comparison_rows(table({"protocol.outlier_ratio": 0.5}), [result]) == \
        [("normal=3, outlier_ratio=0.5", "6/80 ep", "0.900", "0.930 (mean)", "")]
    # a class's own published number: set against it
    assert comparison_rows(table({"protocol.normal": [3]}), [result])[0][3:] == ("0.930", "-0.030")


def test_a_cut_of_the_data_every_run_shares_is_said():
    from types import SimpleNamespace

    from anomaly.report.labels import data_limits

    def run(n_train):
        return SimpleNamespace(settings={"protocol.n_train": n_train, "protocol.n_test": 1000})

    assert data_limits([run(1000), run(1000)]) == "1,000 training images · 1,000 test images"
    assert data_limits([run(1000), run(500)]) == "1,000 test images"  # differing: the rows say it
    assert data_limits([SimpleNamespace(settings={})]) is None

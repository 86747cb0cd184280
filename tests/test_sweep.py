"""Sweeps and reports: a multirun with a failing job keeps the others, the report's numbers are
the result files' numbers, failed and missing runs are listed apart, jobs share the machine."""

import csv
import json
import math

import numpy as np
import pytest

from anomaly import AnomalyError
from anomaly.report import report
from anomaly.sweep import gpu_for_job, parallel_jobs, threads_per_job
from tests.test_cli import run


@pytest.mark.slow
def test_sweep_with_a_failing_job_then_report(tmp_path):
    # 2 classes × 2 seeds, plus a class the dataset does not have: those two jobs fail, the
    # four others still run and the sweep exits non-zero at its end
    proc = run("anomaly.train", "-m", "protocol.normal=0,1,12", "seed=0,1", "trainer.max_epochs=1",
               "logger=none", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "6 jobs: 2 failed, 4 ok (failed: jobs 4, 5)" in proc.stderr
    assert "report: python -m anomaly.report" in proc.stdout
    paths = sorted((tmp_path / "multirun" / "ae" / "digits").glob("*/*/results.json"))
    results = [json.loads(p.read_text()) for p in paths]
    assert len(results) == 6
    ok = [r for r in results if r["status"] == "ok"]
    failed = [r for r in results if r["status"] == "failed"]
    # the class as written ("0"; older results files: the id 0)
    normal = lambda r: [int(c) for c in r["protocol"]["normal"]]  # noqa: E731
    assert len(ok) == 4 and {tuple(normal(r)) for r in ok} == {(0,), (1,)}
    assert len(failed) == 2 and all("unknown class 12" in r["problem"] for r in failed)

    sweep_dir = paths[0].parent.parent
    out = report([sweep_dir], compare=True, echo=False)
    auroc = out["tables"]["auroc"][0]
    assert auroc.header[1:3] == ["0", "1"]  # the failed runs' class 12: no column, listed apart
    (row,) = auroc.rows
    by_class = {c: [r["metrics"]["auroc"] for r in ok if normal(r) == [c]] for c in (0, 1)}
    # cells are the means over seeds, `mean` the mean of the class means, std over every run
    # (a 1-epoch model may rank a class below chance: its cell is then marked suspect, `!`)
    assert row[1].rstrip("!") == f"{np.mean(by_class[0]):.3f}" and row[2].rstrip("!") == f"{np.mean(by_class[1]):.3f}"
    every = by_class[0] + by_class[1]
    mean = (np.mean(by_class[0]) + np.mean(by_class[1])) / 2
    assert row[3] == f"{mean:.3f} ± {np.std(every):.3f}" and row[4:] == ["4", "0"]
    assert math.isclose(auroc.numbers[0][-2], mean)
    assert len(out["left_out"].not_ok) == 2
    # the digits protocol's paper F1 is anomaly-positive
    assert out["tables"]["f1_paper"][0].rows[0][1] == f"{np.mean([r['metrics']['f1'] for r in ok if normal(r) == [0]]):.3f}"
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "## Not in the tables: runs not ok" in md and "unknown class 12" in md
    with open(sweep_dir / "report" / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and sum(r["status"] == "failed" for r in rows) == 2
    assert (sweep_dir / "report" / "auroc.csv").exists()
    plots = {p.name for p in (sweep_dir / "report" / "plots").iterdir()}
    assert {"bars_auroc_digits_one_class.png", "roc_digits_one_class.png",
            "hist_ae_digits_one_class.png"} <= plots


def write_result(path, method, normal, seed, auroc, status="ok", **protocol):
    path.mkdir(parents=True)
    data = {"method": method, "dataset": "mnist", "seed": seed, "status": status,
            "protocol": {"name": "gpnd_folds", "normal": [normal], "normal_names": [str(normal)],
                         "seed": seed, **protocol},
            "metrics": {"auroc": auroc, "f1": 0.5, "f1_inlier": auroc - 0.1} if status == "ok" else {},
            "threshold_strategy": "f1_inlier", "method_settings": {"lr": 0.002}}
    (path / "results.json").write_text(json.dumps(data))


def test_report_rows_columns_compare_and_missing(tmp_path):
    # two methods, folds as repetitions, two outlier ratios as separate rows; gpnd lacks class 2
    values = {}
    for method, classes in (("gpnd", (0, 1)), ("arae", (0, 1, 2))):
        for ratio in (0.1, 0.5):
            for c in classes:
                for fold in range(2):
                    auroc = 0.5 + 0.1 * c + 0.01 * fold + (0.2 if method == "arae" else 0) + ratio / 10
                    values[(method, ratio, c, fold)] = auroc
                    write_result(tmp_path / method / f"r{ratio}" / f"{c}_{fold}", method, c, 0, auroc,
                                 fold=fold, outlier_ratio=ratio)
    out = report([tmp_path], compare=True, plots=False, echo=False)
    # a table per outlier ratio (a protocol setting), the methods its rows, the classes as named
    tables = out["tables"]["auroc"]
    assert [t.title for t in tables] == ["AUROC · mnist · gpnd_folds · outlier_ratio=0.1",
                                         "AUROC · mnist · gpnd_folds · outlier_ratio=0.5"]
    table = tables[0]
    assert table.header[1:4] == ["0", "1", "2"]
    assert [r[0] for r in table.rows] == ["arae", "gpnd"]
    arae, gpnd = table.rows
    assert gpnd[1] == f"{np.mean([values[('gpnd', 0.1, 0, f)] for f in range(2)]):.3f}"
    assert gpnd[3] == "—" and gpnd[4].endswith(" *")  # class 2 missing: shown, marked, not averaged
    assert not arae[4].endswith("*")  # every class of its table: no mark
    # the paper's F1 for gpnd_folds is the inlier one, and its title says so
    f1 = out["tables"]["f1_paper"][0]
    assert f1.title.startswith("F1 (inliers positive) · ")
    assert f1.rows[0][1] == f"{np.mean([values[('arae', 0.1, 0, f)] - 0.1 for f in range(2)]):.3f}"
    compare = out["compare"]["auroc"]
    assert [t.title for t in compare] == ["AUROC · mnist · gpnd_folds · outlier_ratio=0.1",
                                          "AUROC · mnist · gpnd_folds · outlier_ratio=0.5"]
    assert compare[0].header == ["class", "arae", "gpnd"]
    assert compare[0].rows[2][2] == "—" and compare[0].rows[-1][0] == "mean"
    assert math.isclose(compare[0].numbers[0][0], np.mean([values[("arae", 0.1, 0, f)] for f in range(2)]))


def test_report_lists_invalid_runs_apart_and_refuses_an_empty_dir(tmp_path):
    write_result(tmp_path / "a", "ae", 0, 0, 0.9)
    write_result(tmp_path / "b", "ae", 0, 1, None, status="invalid_scores")
    out = report([tmp_path], plots=False, echo=False)
    assert out["tables"]["auroc"][0].rows[0][1] == "0.900"
    assert [r.status for r in out["left_out"].not_ok] == ["invalid_scores"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no results.json"):
        report([tmp_path / "empty"], echo=False)


def test_jobs_share_the_machine():
    assert parallel_jobs(-1, cpus=8) == 8 and parallel_jobs(-2, cpus=8) == 7 and parallel_jobs(3) == 3
    assert threads_per_job(None, n_jobs=1, cpus=8) is None  # one job: torch's default
    # one job on a busy machine: the cores the load leaves idle, at least one
    assert threads_per_job(None, n_jobs=1, cpus=2, load=0.3) is None  # idle: every core
    assert threads_per_job(None, n_jobs=1, cpus=2, load=1.2) == 1
    assert threads_per_job(None, n_jobs=1, cpus=2, load=3.7) == 1
    assert threads_per_job(None, n_jobs=1, cpus=16, load=4.1) == 12
    assert threads_per_job(2, n_jobs=1, cpus=2, load=3.7) == 2  # threads=N wins
    assert threads_per_job(None, n_jobs=-1, cpus=8) == 1
    assert threads_per_job(None, n_jobs=2, cpus=8) == 4
    assert threads_per_job(3, n_jobs=-1, cpus=8) == 3
    with pytest.raises(AnomalyError, match="threads=0 must be ≥ 1"):
        threads_per_job(0, n_jobs=1)
    assert gpu_for_job(5, n_gpus=4, n_jobs=4) == [1]
    assert gpu_for_job(5, n_gpus=1, n_jobs=4) is None and gpu_for_job(5, n_gpus=4, n_jobs=1) is None


@pytest.mark.slow
def test_optuna_sweeper_sees_validation_numbers_only(tmp_path):
    # the real hparams_search config: each trial's returned value is its validation AUROC, so
    # Optuna's best value is the best validation AUROC, not any trial's test AUROC
    proc = run("anomaly.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.sampler.n_startup_trials=2", "trainer.max_epochs=1", "logger=none",
               "print_config=false", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "multirun" / "ae" / "digits").iterdir()
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    assert len(results) == 2
    best = float((sweep_dir / "optimization_results.yaml").read_text().split("best_value:")[1])
    val = [r["val_metrics"]["auroc"] for r in results]
    test = [r["metrics"]["auroc"] for r in results]
    assert math.isclose(best, max(val), rel_tol=1e-9)
    assert not any(math.isclose(best, t, rel_tol=1e-9) for t in test)
    # on the terminal: each trial's validation number, named as such; the test table once, for
    # the trial chosen on validation, labelled as that
    assert proc.stdout.count("trial: validation AUROC") == 2
    assert proc.stdout.count("test metric") == 1
    chosen = max(range(2), key=lambda i: val[i])
    assert f"best trial: job {chosen}, validation AUROC {val[chosen]:.4f} (the metric tuned" in proc.stdout
    assert proc.stdout.index("best trial") < proc.stdout.index("the test split, once") < proc.stdout.index("test metric")


def test_the_value_returned_to_sweepers_is_a_validation_metric():
    from anomaly.train import returned_value

    results = {"metrics": {"auroc": 0.9, "fpr95": 0.2}, "val_metrics": {"auroc": 0.7, "fpr95": 0.4}}
    assert returned_value(results, "auroc") == 0.7
    assert returned_value(results, "fpr95") == 0.4
    # a failed job (no metrics) or a validation split without both classes: NaN, which Optuna
    # records as a failed trial instead of ending the study
    assert math.isnan(returned_value({"status": "failed"}, "auroc"))
    assert math.isnan(returned_value({"metrics": {"auroc": 0.9}, "val_metrics": {"auroc": None}}, "auroc"))

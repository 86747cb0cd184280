"""The report (anomaly.report) on hand-written results files: what may be averaged, what is left
out, argument checks before anything is written, ours vs the paper, the README section, and the
figures (anomaly.plots)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly.report import group, layout, load, main, readme, report, table_conf
from anomaly.report.render import README_END, README_START
from tests.helpers import cli


@pytest.fixture
def real_table_configs():
    """Asked for by the tests that read conf/table (published numbers and references)."""


@pytest.fixture(autouse=True)
def made_up_tables(request, monkeypatch):
    """The reproduced runs below carry made-up published numbers under real table names: the
    report is to use those, not conf/table's (unless a test asks for `real_table_configs`)."""
    if "real_table_configs" not in request.fixturenames:
        monkeypatch.setattr(table_conf, "table_config", lambda name: None)


def config(normal=0, seed=0, fold=0, max_epochs=10, batch_size=32, lr=0.001, limit=None, **bookkeeping):
    return {"seed": seed, "dataset": {"name": "mnist", "image_size": 32, "loader": {"download": True}},
            "protocol": {"_target_": "anomaly.data.protocols.GPNDFolds", "normal": [normal], "anomalous": None,
                         "fold": fold, "outlier_ratio": 0.5, "seed": seed},
            "method": {"_target_": "anomaly.methods.gpnd.GPND", "lr": lr},
            "data": {"batch_size": batch_size, "eval_batch_size": 512},
            "threshold": {"_target_": "anomaly.evaluation.thresholds.F1Inlier"},
            "trainer": {"max_epochs": max_epochs, "max_steps": -1, "limit_train_batches": limit,
                        "limit_val_batches": None, "limit_test_batches": None, "fast_dev_run": False,
                        "precision": "32-true", "accumulate_grad_batches": 1},
            **bookkeeping}


def write(path: Path, auroc: float | None, normal=0, seed=0, fold=0, status="ok", method="gpnd", cfg=None,
          drop=(), **fields) -> Path:
    """A results.json as anomaly.train writes it (new layout: `normal` = names, `normal_ids`)."""
    path.mkdir(parents=True)
    data = {"status": status, "method": method, "dataset": "mnist", "seed": seed,
            "protocol": {"name": "gpnd_folds", "normal": [str(normal)], "normal_ids": [normal], "anomalous": None,
                         "fold": fold, "outlier_ratio": 0.5, "n_folds": 5, "fold_seed": 0, "seed": seed},
            "metrics": {"auroc": auroc, "f1": 0.5, "f1_inlier": auroc - 0.1} if auroc is not None else {},
            "threshold_strategy": "f1_inlier", "method_settings": {"lr": 0.001},
            "config": cfg if cfg is not None else config(normal, seed, fold),
            "run_kind": "train", "debug": None, "budget": None, **fields}
    for key in drop:
        data.pop(key)
    (path / "results.json").write_text(json.dumps(data))
    return path


def rows(out, metric="auroc"):
    """Row label → {column: text} over the metric's tables (one per dataset × protocol)."""
    return {row[0]: dict(zip(table.header, row)) for table in out["tables"][metric] for row in table.rows}


# ---- what may be averaged ------------------------------------------------------------------------
def test_mixed_epochs_split_the_row_and_name_the_key(tmp_path):
    for epochs, base in ((10, 0.80), (20, 0.90)):
        for fold in range(2):
            # bookkeeping differs from run to run (paths, threads, the data root): never a split
            cfg = config(fold=fold, max_epochs=epochs, paths={"output_dir": f"/runs/{epochs}/{fold}"},
                         threads=fold + 1, ckpt_path=None if fold else "last", print_config=bool(fold))
            cfg["dataset"]["loader"]["root"] = f"/data{fold}"
            write(tmp_path / f"e{epochs}_f{fold}", base + 0.02 * fold, fold=fold, cfg=cfg)
    out = report([tmp_path], plots=False, echo=False)
    by_label = rows(out)
    assert sorted(by_label) == ["gpnd · trainer.max_epochs=10",
                                "gpnd · trainer.max_epochs=20"]
    # each row is the mean of its own two folds, not of all four runs
    assert by_label["gpnd · trainer.max_epochs=10"]["0"] == "0.810"
    assert by_label["gpnd · trainer.max_epochs=20"]["0"] == "0.910"
    assert [r["runs"] for r in by_label.values()] == ["2", "2"]


def test_any_other_setting_splits_and_several_keys_are_named(tmp_path):
    write(tmp_path / "a", 0.8, cfg=config(batch_size=32, lr=0.001))
    write(tmp_path / "b", 0.9, cfg=config(batch_size=64, lr=0.01))
    labels = sorted(rows(report([tmp_path], plots=False, echo=False)))
    assert labels == ["gpnd · data.batch_size=32 · lr=0.001",
                      "gpnd · data.batch_size=64 · lr=0.01"]


def test_seeds_folds_and_classes_are_averaged_or_columns(tmp_path):
    values = {}
    for normal in (0, 1):
        for seed in (0, 1):
            for fold in (0, 1):
                values[normal, seed, fold] = 0.7 + 0.1 * normal + 0.01 * seed + 0.001 * fold
                write(tmp_path / f"{normal}_{seed}_{fold}", values[normal, seed, fold], normal, seed, fold)
    out = report([tmp_path], plots=False, echo=False)
    (row,) = out["tables"]["auroc"][0].rows
    assert row[0] == "gpnd"
    assert row[1] == f"{np.mean([v for k, v in values.items() if k[0] == 0]):.3f}"
    assert row[2] == f"{np.mean([v for k, v in values.items() if k[0] == 1]):.3f}"
    assert row[-2:] == ["8", "0"]


def test_a_run_and_its_kept_copy_count_once(tmp_path):
    """The run dir's results.json and its copy in reproduced/ are one run: n and the spread are
    those of the distinct runs."""
    same = dict(created="2026-12-04T10:00:00+00:00", config_hash="abc")
    write(tmp_path / "runs" / "s0", 0.8, seed=0, **same)
    write(tmp_path / "kept" / "s0", 0.8, seed=0, **same)  # the kept copy
    write(tmp_path / "runs" / "s1", 0.9, seed=1, created="2026-12-04T11:00:00+00:00", config_hash="abc")
    out = report([tmp_path / "runs", tmp_path / "kept"], plots=False, echo=False)
    (row,) = out["tables"]["auroc"][0].rows
    assert row[-2:] == ["2", "0"]  # two runs, not three
    assert row[1] == "0.850"


def test_a_suspect_number_is_marked_and_named_under_its_table_not_left_out(tmp_path):
    write(tmp_path / "clean", 0.9, normal=0)
    write(tmp_path / "below", 0.3, normal=1)  # kept before `suspect` existed: flagged from its numbers
    write(tmp_path / "gap", 0.8, normal=2, suspect=[{"id": "val_test_gap", "reason": "validation 0.99, test 0.80"}])
    out = report([tmp_path], plots=False, echo=False)
    (table,) = out["tables"]["auroc"]
    (row,) = table.rows
    assert row[1:5] == ["0.900", "0.300!", "0.800!", f"{(0.9 + 0.3 + 0.8) / 3:.3f} ± 0.262"]  # counted
    legend = ["- test AUROC below chance (0.5): gpnd 1", "- validation and test AUROC more than 0.2 apart: gpnd 2"]
    assert table.notes[1:] == legend
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| gpnd | 0.900 | 0.300! | 0.800! |" in text and "\n".join(legend) in text
    with open(tmp_path / "report" / "auroc.csv") as fh:
        cells = {line["column"]: line["suspect"] for line in csv.DictReader(fh)}
    assert cells == {"0": "", "1": "auroc_below_chance", "2": "val_test_gap", "mean ± std": ""}
    with open(tmp_path / "report" / "runs.csv") as fh:
        assert sorted(line["suspect"] for line in csv.DictReader(fh)) == ["", "auroc_below_chance", "val_test_gap"]


def test_tables_count_ok_runs_each_config_once_and_list_the_others_apart(tmp_path, capsys):
    same = dict(config_hash="c0ffee", train_hash="1234")
    write(tmp_path / "ok", 0.8, created="2026-12-04T10:00:00+00:00", **same)
    # the same run config run again (or re-scored) into another dir: one model, its newest result
    write(tmp_path / "again", 0.9, created="2026-12-04T11:00:00+00:00", **same)
    write(tmp_path / "seed1", 0.7, seed=1, created="2026-12-04T09:00:00+00:00", config_hash="beef", train_hash="5678")
    # a class the dataset does not have: the failure records the classes as they were asked for
    for n in range(5):
        write(tmp_path / f"bad{n}", None, normal=11 + n, status="failed", drop=("config",),
              problem=f"AnomalyError: protocol.normal=[{11 + n}]: unknown class\nTraceback (most recent call last):")
    out = report([tmp_path], plots=False, echo=True)
    (table,) = out["tables"]["auroc"]
    assert table.header == ["method", "0", "mean ± std", "runs", "failed"]  # no column 11…15
    assert table.rows == [["gpnd", "0.800", "0.800 ± 0.100", "2", "0"]]  # seeds 0 (newest) and 1
    apart = [f"{tmp_path / f'bad{n}'} · failed · AnomalyError: protocol.normal=[{11 + n}]: unknown class"
             for n in range(4)] + ["… and 1 more (runs.csv lists every run)"]
    printed = capsys.readouterr().out
    assert "\n".join(f"  {line}" for line in apart) in printed
    line = "Left out: 5 runs not ok (5 failed); 1 repeat of a run config counted once (its newest result)."
    assert line in printed
    text = (tmp_path / "report" / "report.md").read_text()
    assert "\n".join(f"- {line}" for line in apart) in text and line in text
    with open(tmp_path / "report" / "runs.csv") as fh:
        assert sorted(r["status"] for r in csv.DictReader(fh)) == ["failed"] * 5 + ["ok"] * 2


def test_budgets_are_never_averaged(tmp_path):
    # the same config under two budgets (and one ordinary run): three rows, named by the budget
    write(tmp_path / "paper", 0.9, budget="paper")
    write(tmp_path / "reduced", 0.7, budget="reduced")
    write(tmp_path / "plain", 0.8)
    by_label = rows(report([tmp_path], plots=False, echo=False))
    assert {label: r["0"] for label, r in by_label.items()} == {
        "gpnd · budget=none": "0.800",
        "gpnd · budget=paper": "0.900",
        "gpnd · budget=reduced": "0.700"}


# ---- left out unless asked for -------------------------------------------------------------------
def test_debug_and_rescore_runs_are_left_out_unless_asked_for(tmp_path, capsys):
    write(tmp_path / "real", 0.9)
    write(tmp_path / "smoke", 0.55, debug="debug=fast")  # (above chance: not flagged as suspect)
    # older files: no `debug` field, but a config with limited batches; no `run_kind`, but a
    # re-score's threshold_refit entry
    write(tmp_path / "old_smoke", 0.65, cfg=config(limit=3), drop=("debug",))
    write(tmp_path / "rescore", 0.6, run_kind="rescore")
    write(tmp_path / "old_rescore", 0.61, drop=("run_kind",), threshold_refit=True)

    out = report([tmp_path], plots=False, echo=True)
    assert [r.path.name for r in out["runs"]] == ["real"]
    assert list(rows(out)) == ["gpnd"] and rows(out)["gpnd"]["0"] == "0.900"
    line = ("Left out: 2 smoke/debug runs (debug=fast, trainer.limit_train_batches=3; --include-debug); "
            "2 re-scores (python -m anomaly.evaluate of a trained run; --include-rescores).")
    assert line in capsys.readouterr().out
    assert line in (tmp_path / "report" / "report.md").read_text().splitlines()

    out = report([tmp_path], plots=False, echo=False, include_debug=True)
    assert sorted(r.path.name for r in out["runs"]) == ["old_smoke", "real", "smoke"]
    labels = rows(out)
    assert labels["gpnd"]["0"] == "0.900"  # never averaged with the smoke runs
    assert labels["gpnd · debug · trainer.limit_train_batches=3"]["0"] == "0.650"
    assert labels["gpnd · debug · trainer.limit_train_batches=none"]["0"] == "0.550"

    out = report([tmp_path], plots=False, echo=False, include_rescores=True)
    assert rows(out)["gpnd · rescore"]["0"] == f"{(0.6 + 0.61) / 2:.3f}"
    assert "re-score" not in (tmp_path / "report" / "report.md").read_text()


def test_only_left_out_runs_is_an_error(tmp_path):
    write(tmp_path / "smoke", 0.5, debug="debug=fast")
    with pytest.raises(SystemExit, match=r"every one was left out. Left out: 1 smoke/debug run"):
        report([tmp_path], plots=False, echo=False)
    assert not (tmp_path / "report").exists()


# ---- arguments are checked before anything is written --------------------------------------------
def test_bogus_metric_exits_2_and_leaves_the_report_untouched(tmp_path, capsys):
    write(tmp_path / "run", 0.9)
    main([str(tmp_path), "--no-plots"])
    md = tmp_path / "report" / "report.md"
    before = md.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--metric", "auroc", "--metric", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --metric bogus: not a metric; choose from auroc, ")
    assert "f1_inlier" in err[0]
    assert md.read_text() == before


def test_missing_dir_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such directory"


# ---- ours vs the paper ---------------------------------------------------------------------------
def reproduced(path: Path, auroc, anomalous, seed, paper=None, table="adae_mnist", budget="paper",
               paper_mean=None, status="ok", **extra) -> Path:
    cfg = config(seed=seed)
    cfg["protocol"].update(normal=None, anomalous=[anomalous])
    info = {"table": table, "cell": {"protocol.anomalous": [anomalous], "seed": seed},
            "paper": {} if paper is None else {"auroc": paper}, "paper_mean": paper_mean or {},
            "metric": "auroc", "paper_source": "ADAE (Vu et al. 2019)", "trained_in": f"a{anomalous}-s{seed}"}
    path = write(path, auroc, seed=seed, method="adae", cfg=cfg, budget=budget, reproduce=info, status=status,
                 command=f"python -m anomaly.reproduce table={table} budget={budget}", **extra)
    data = json.loads((path / "results.json").read_text())
    data["protocol"] = {"name": "holdout_class", "anomalous": [str(anomalous)], "seed": seed}
    (path / "results.json").write_text(json.dumps(data))
    return path


def paper_rows(out, metric="auroc"):
    (table,) = out["paper"][metric]
    return {row[0]: row for row in table.rows}, table


def test_below_is_marked_only_beyond_the_spread(tmp_path):
    # ¬1: 0.80 ± 0.02 against 0.85: below by more than the std → "below"
    # ¬2: 0.845 ± 0.02 against 0.86: below, but within the std → no mark
    # ¬3: one run, 0.70 against 0.87: no spread → no "below", "no spread"
    # ¬4: 0.95 ± 0.01 against 0.88: above → no mark
    for seed, (a, b, d) in enumerate([(0.78, 0.825, 0.94), (0.82, 0.865, 0.96)]):
        reproduced(tmp_path / f"a1_{seed}", a, 1, seed, paper=0.85)
        reproduced(tmp_path / f"a2_{seed}", b, 2, seed, paper=0.86)
        reproduced(tmp_path / f"a4_{seed}", d, 4, seed, paper=0.88)
    reproduced(tmp_path / "a3_0", 0.70, 3, 0, paper=0.87)
    out = report([tmp_path], plots=False, echo=False)
    lines, table = paper_rows(out)
    assert table.header == ["cell", "n", "AUROC ours", "paper", "Δ"]
    assert lines["¬1"][1:] == ["2", "0.800 ± 0.020", "0.850", "-0.050 below"]
    assert lines["¬2"][1:] == ["2", "0.845 ± 0.020", "0.860", "-0.015"]
    assert lines["¬3"][1:] == ["1", "0.700", "0.870", "-0.170 no spread"]
    assert lines["¬4"][1:] == ["2", "0.950 ± 0.010", "0.880", "+0.070"]


def test_ours_paper_and_delta_per_cell_and_mean(tmp_path):
    # the paper gives numbers for ¬1 and ¬2 only; its published mean is over the whole table
    values = {(1, 0): 0.80, (1, 1): 0.84, (2, 0): 0.90, (2, 1): 0.92, (3, 0): 0.60, (3, 1): 0.64}
    paper = {1: 0.821, 2: 0.948, 3: None}
    for (a, seed), v in values.items():
        reproduced(tmp_path / f"a{a}_{seed}", v, a, seed, paper=paper[a])
    reproduced(tmp_path / "failed", None, 3, 2, status="failed", paper=None)
    out = report([tmp_path], plots=False, echo=False)
    lines, table = paper_rows(out)
    assert list(lines) == ["¬1", "¬2", "¬3", "mean"]
    assert lines["¬1"][1:] == ["2", "0.820 ± 0.020", "0.821", "-0.001"]
    assert lines["¬2"][1:] == ["2", "0.910 ± 0.010", "0.948", "-0.038 below"]
    assert lines["¬3"][1:] == ["2", "0.620 ± 0.020", "—", "—"]  # the failed run: listed apart
    assert [r.path.name for r in out["left_out"].not_ok] == ["failed"]
    # without a published mean: the paper's numbers and ours over the same cells (¬1, ¬2)
    ours_mean = (0.82 + 0.91) / 2
    assert lines["mean"][1:4] == ["4", f"{ours_mean:.3f} ± 0.015", f"{(0.821 + 0.948) / 2:.3f}"]
    assert math.isclose(table.numbers[-1][2], ours_mean - (0.821 + 0.948) / 2)

    # with the paper's own mean: ours over every cell we ran, against it
    for path in tmp_path.glob("a*/results.json"):
        data = json.loads(path.read_text())
        data["reproduce"]["paper_mean"] = {"auroc": 85.8}  # a percentage reads as 0.858
        path.write_text(json.dumps(data))
    lines, table = paper_rows(report([tmp_path], plots=False, echo=False))
    every = np.mean([0.82, 0.91, 0.62])
    # spread of the mean: the std over the seeds of the mean over the three cells
    spread = np.std([np.mean([0.80, 0.90, 0.60]), np.mean([0.84, 0.92, 0.64])])
    assert lines["mean"][1:] == ["6", f"{every:.3f} ± {spread:.3f}", "0.858",
                                 f"{every - 0.858:+.3f} below"]


def test_a_number_the_paper_gives_for_the_row_is_the_rows_not_the_classes(tmp_path):
    # GPND's MNIST table: one F1 per outlier share, the mean over the digits
    for normal in (0, 1):
        for fold in (0, 1):
            path = write(tmp_path / f"{normal}_{fold}", 0.9 + 0.02 * normal + 0.01 * fold, normal, fold=fold,
                         budget="paper", command="python -m anomaly.reproduce table=gpnd_mnist budget=paper",
                         reproduce={"table": "gpnd_mnist", "metric": "auroc", "paper_source": "GPND",
                                    "cell": {"protocol.normal": [normal], "protocol.fold": fold,
                                             "protocol.outlier_ratio": 0.5},
                                    "paper": {"auroc": 0.93}, "paper_mean": {}, "trained_in": f"n{normal}f{fold}"})
    lines, table = paper_rows(report([tmp_path], plots=False, echo=False))
    assert lines["outlier_ratio=0.5 · 0"][3:] == ["—", "—"]  # no per-digit number to set against
    mean = np.mean([0.905, 0.925])
    spread = np.std([np.mean([0.90, 0.92]), np.mean([0.91, 0.93])])  # over the folds
    assert lines["outlier_ratio=0.5 · mean"][1:] == ["4", f"{mean:.3f} ± {spread:.3f}", "0.930",
                                                     f"{mean - 0.93:+.3f} below"]


@pytest.mark.slow
def test_paper_tables_split_by_budget_and_plot(tmp_path):
    for budget, base in (("paper", 0.9), ("reduced", 0.7)):
        for seed in (0, 1):
            reproduced(tmp_path / f"{budget}{seed}", base + 0.01 * seed, 1, seed, paper=0.821, budget=budget)
    out = report([tmp_path], echo=False)
    titles = [t.title for t in out["paper"]["auroc"]]
    assert titles == ["adae_mnist · budget paper", "adae_mnist · budget reduced"]
    assert out["paper"]["auroc"][0].rows[0][2] == "0.905 ± 0.005"
    assert out["paper"]["auroc"][1].rows[0][2] == "0.705 ± 0.005"
    plots = {p.name for p in (tmp_path / "report" / "plots").iterdir()}
    assert {"paper_auroc_adae_mnist_budget_paper.png", "paper_auroc_adae_mnist_budget_reduced.png"} <= plots
    assert "## Ours vs the paper" in (tmp_path / "report" / "report.md").read_text()
    csv_lines = (tmp_path / "report" / "paper.csv").read_text().splitlines()
    assert csv_lines[0].startswith("table,budget,flags,split,row,class,metric,ours,std,n")
    assert len(csv_lines) == 1 + 2 * 2  # 2 tables × (one cell + mean)


# ---- the README's reproduction section -----------------------------------------------------------
README = f"""# project

Intro text.

## Reproduction

{README_START}
stale table
{README_END}

## Afterwards

Kept as it is.
"""


def test_readme_section_is_regenerated_between_the_markers(tmp_path, capsys):
    runs = tmp_path / "reproduced"
    for seed in (0, 1):
        reproduced(runs / f"a1_{seed}", 0.80 + 0.04 * seed, 1, seed, paper=0.821, paper_mean={"auroc": 0.858})
        reproduced(runs / f"a2_{seed}", 0.90 + 0.02 * seed, 2, seed, paper=0.948, paper_mean={"auroc": 0.858})
    reproduced(runs / "smoke", 0.5, 1, 0, paper=0.821, budget="smoke", debug="trainer.limit_train_batches=2")
    write(runs / "ordinary", 0.99)  # not a reproduction: not in the README
    path = tmp_path / "README.md"
    path.write_text(README)
    main([str(runs), "--readme", str(path)])
    text = path.read_text()
    before, section = text.split(README_START)
    section, after = section.split(README_END)
    assert before == README.split(README_START)[0] and after == README.split(README_END)[1]
    assert "stale table" not in section
    assert "#### adae_mnist · budget paper" in section and "budget smoke" not in section
    assert "ADAE (Vu et al. 2019) · 4 cells run · 4 trainings" in section
    assert "| ¬1 | 2 | 0.820 ± 0.020 | 0.821 | -0.001 |" in section
    assert "| ¬2 | 2 | 0.910 ± 0.010 | 0.948 | -0.038 below |" in section
    assert "| mean | 4 | 0.865 ± 0.015 | 0.858 | +0.007 |" in section
    assert "Re-run: `python -m anomaly.reproduce table=adae_mnist budget=paper`" in section
    assert "Left out: 1 smoke/debug run (trainer.limit_train_batches=2; --include-debug)." in section
    assert "0.990" not in section
    assert not (runs / "report").exists()  # nothing else written
    # again: the same text (no duplicated section)
    main([str(runs), "--readme", str(path)])
    assert path.read_text() == text
    assert "reproduction section unchanged" in capsys.readouterr().out
    # the smoke budget on request: a table of its own
    readme([runs], path, include_debug=True, echo=False)
    assert "#### adae_mnist · budget smoke · debug" in path.read_text()


def test_readme_without_markers_is_an_error(tmp_path, capsys):
    reproduced(tmp_path / "runs" / "a", 0.8, 1, 0, paper=0.821)
    path = tmp_path / "README.md"
    path.write_text("# project\n\nno section here\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "runs"), "--readme", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path} has no reproduction section: put the lines "
                                               f"{README_START} and {README_END}")
    assert path.read_text() == "# project\n\nno section here\n"
    assert not (tmp_path / "runs" / "report").exists()


# ---- figures -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_figures_name_classes_and_auroc(tmp_path):
    from anomaly import plots
    from anomaly.evaluation.metrics import compute_metrics
    from anomaly.evaluation.gather import ScoredSplit
    from anomaly.results import write_results

    assert plots.classes_text({"normal": ["1", "3", "77"], "normal_ids": [0, 2, 76]}) == "normal 1,3,77"
    assert plots.classes_text({"normal": [0, 2], "normal_names": ["1", "3"]}) == "normal 1,3"  # older layout
    assert plots.classes_text({"anomalous": ["1"], "normal": ["0", "2"]}) == "anomalous 1"
    assert plots.auroc_label("digit 3", 0.9123) == "digit 3 (AUROC 0.912)"

    # the one ROC code path gives back the AUROC of the metrics
    rng = np.random.default_rng(0)
    anomalous = np.r_[np.zeros(60), np.ones(40)].astype(bool)
    scores = rng.normal(size=100) + anomalous
    scores[:5] = scores[60:65]  # ties across the classes
    fpr, tpr = plots.roc_curve(scores, anomalous)
    metrics = compute_metrics(torch.tensor(scores), torch.tensor(anomalous), threshold=0.5)
    assert math.isclose(float(np.trapezoid(tpr, fpr)), metrics["auroc"], abs_tol=1e-6)

    split = ScoredSplit(torch.tensor(scores, dtype=torch.float32), torch.tensor(anomalous),
                        torch.tensor(anomalous.astype(int)), torch.arange(100))
    summary = {"method": "ae", "dataset": "coil100", "status": "ok", "metrics": {"auroc": 0.8},
               "protocol": {"name": "coil_random", "normal": ["1", "3", "77"]}}
    write_results(tmp_path, summary, split, threshold=0.5)
    for name in ("roc.png", "score_hist.png"):
        assert (tmp_path / name).stat().st_size > 5000

    # and in a report: bars, ROC curves per class, histograms
    for normal in (0, 1):
        run = write(tmp_path / "sweep" / str(normal), 0.8, normal)
        np.savez(run / "scores.npz", scores=scores, anomalous=anomalous.astype(np.int8))
    out = report([tmp_path / "sweep"], echo=False)
    names = {p.name for p in out["files"] if p.suffix == ".png"}
    assert names == {"bars_auroc_mnist_gpnd_folds.png", "roc_mnist_gpnd_folds.png", "hist_gpnd_mnist_gpnd_folds.png"}


def test_paper_f1_follows_the_configured_rule_not_its_fallback(tmp_path):
    # gpnd_folds: the paper's F1 is inlier-positive, also when validation had no anomalies and the
    # threshold fell back to a quantile
    write(tmp_path / "run", 0.9, threshold_strategy="quantile",
          threshold_fit={"configured": "f1_inlier", "used": "quantile", "reason": "validation has no anomalies"})
    out = report([tmp_path], plots=False, echo=False)
    assert out["tables"]["f1_paper"][0].rows[0][1] == "0.800"  # f1_inlier (auroc − 0.1), not f1 (0.5)


def test_coil_object_counts_are_rows_never_averaged_together(tmp_path):
    # COIL-100: 1 and 4 drawn objects are two experiments (the paper gives one number each); the
    # draws are the repetitions of a row
    values = {(1, 0): 0.96, (1, 1): 0.98, (4, 0): 0.90, (4, 1): 0.92}
    for (n, draw), v in values.items():
        path = write(tmp_path / f"n{n}_d{draw}", v, 0, budget="reduced",
                     command="python -m anomaly.reproduce table=gpnd_coil100 budget=reduced",
                     reproduce={"table": "gpnd_coil100", "metric": "auroc", "paper_source": "GPND",
                                "cell": {"protocol.n_normal": n, "protocol.draw": draw},
                                "paper": {"auroc": {1: 0.968, 4: 0.945}[n]}, "paper_mean": {},
                                "trained_in": f"n{n}d{draw}"})
    lines, _ = paper_rows(report([tmp_path], plots=False, echo=False))
    ones = [row for label, row in lines.items() if label.startswith("n_normal=1")]
    fours = [row for label, row in lines.items() if label.startswith("n_normal=4")]
    assert ones and fours
    assert ones[-1][2:4] == ["0.970 ± 0.010", "0.968"]
    assert fours[-1][2:4] == ["0.910 ± 0.010", "0.945"]
    assert not any("0.940" in " ".join(map(str, row)) for row in lines.values())  # no 1+4 average


def test_a_target_moved_to_another_module_is_the_same_setting(tmp_path):
    """Results written before the protocols became a package name anomaly.data.protocols.GPNDFolds;
    later ones …protocols.gpnd_folds.GPNDFolds. The same class: one row. A target that no longer
    imports is compared as written, so it still splits."""
    for fold, target in enumerate(("anomaly.data.protocols.GPNDFolds", "anomaly.data.protocols.gpnd_folds.GPNDFolds")):
        cfg = config(fold=fold)
        cfg["protocol"]["_target_"] = target
        write(tmp_path / f"f{fold}", 0.8 + 0.1 * fold, fold=fold, cfg=cfg)
    (row,) = report([tmp_path], plots=False, echo=False)["tables"]["auroc"][0].rows
    assert row[1] == "0.850" and row[-2:] == ["2", "0"]
    cfg = config(fold=2)
    cfg["protocol"]["_target_"] = "anomaly.data.protocols.Gone"
    write(tmp_path / "gone", 0.5, fold=2, cfg=cfg)
    # the protocol class is a protocol setting: a table of its own
    tables = report([tmp_path], plots=False, echo=False)["tables"]["auroc"]
    assert sum(len(t.rows) for t in tables) == 2 and len(tables) == 2


def test_another_world_size_is_another_row(tmp_path):
    # a file from before topologies were recorded is one process: it joins the 1-process row
    write(tmp_path / "old", 0.80)
    write(tmp_path / "one", 0.82, fold=1, cfg={**config(fold=1), "topology": {"world_size": 1}})
    write(tmp_path / "ddp", 0.90, cfg={**config(), "topology": {"world_size": 4, "strategy": "ddp",
                                                                  "sync_batchnorm": True}})
    by_label = rows(report([tmp_path], plots=False, echo=False))
    assert sorted(by_label) == ["gpnd · topology.world_size=1",
                                "gpnd · topology.world_size=4"]
    assert by_label["gpnd · topology.world_size=1"]["runs"] == "2"


def test_other_published_numbers_of_a_table_are_shown_not_compared(tmp_path, real_table_configs):
    # gpnd_mnist's config holds a second reference at 50 % (the authors' rewritten code); adae_mnist none
    runs = tmp_path / "reproduced"
    reproduced(runs / "adae", 0.9, 1, 0, paper=0.821)
    reproduced(runs / "gpnd", 0.9, 1, 0, paper=0.821, table="gpnd_mnist")
    path = tmp_path / "README.md"
    path.write_text(README)
    readme([runs], path, echo=False)
    adae, gpnd = path.read_text().split("#### gpnd_mnist")
    assert "Also published" not in adae
    assert ("Also published, not compared with: F1 (inliers positive) 0.939 at protocol.outlier_ratio=0.5 "
            "(podgorskiy/GPND pull request 10, the code rewritten after the paper).") in gpnd


def test_a_reference_without_its_source_is_refused():
    from anomaly import AnomalyError
    from anomaly.reproduce.tables import Table

    node = {"name": "t", "grid": {}, "budgets": {"paper": {}, "reduced": {}, "smoke": {}},
            "references": [{"where": {}, "auroc": 0.9}]}
    with pytest.raises(AnomalyError, match="each reference needs a source and a number"):
        Table.from_config(node)


def test_published_numbers_come_from_the_table_config_as_it_is_now(tmp_path, real_table_configs):
    # a p1 cell kept with the paper's mean over digits (as recorded before the per-digit numbers were
    # in conf/table/arae_mnist_p1.yaml) is set against digit 0's own number
    cfg = config()
    info = {"table": "arae_mnist_p1", "cell": {"protocol.normal": [0], "protocol.anomaly_ratio": 0.1},
            "paper": {"f1_inlier": 0.977, "auroc": 0.971}, "metric": "f1_inlier", "paper_source": "ARAE"}
    write(tmp_path / "p1", 0.98, method="arae", cfg=cfg, budget="reduced", reproduce=info)
    (run,) = report([tmp_path], plots=False, echo=False)["runs"]
    assert run.paper_value("f1_inlier") == 0.9914 and run.paper_value("auroc") == 0.9977
    # a table this checkout does not have: the recorded numbers
    info["table"] = "no_such_table"
    write(tmp_path / "other", 0.98, method="arae", cfg=cfg, budget="reduced", reproduce=info)
    runs = report([tmp_path / "other"], plots=False, echo=False)["runs"]
    assert runs[0].paper_value("f1_inlier") == 0.977


# ---- what a researcher sees ----------------------------------------------------------------------
def test_terminal_tables_fit_80_columns_and_keep_rows_apart(capsys):
    from anomaly.report.render import Table, print_table

    classes = [str(c) for c in range(10)]
    labels = ["arae · attack=linf · trainer.max_epochs=10", "arae · attack=linf · trainer.max_epochs=20"]
    rows = [[label] + ["0.912"] * 10 + ["0.912 ± 0.031 *", "30", "0"] for label in labels]
    print_table(Table("AUROC · mnist · one_class", ["method"] + classes + ["mean ± std", "runs", "failed"],
                      rows, []), width=80)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "0.912 ± 0.031 *" in out  # no number shortened
    # labels fold onto a second line instead of being cut: both rows still say which is which
    assert out.count("trainer.max_epochs=10") == 2 and out.count("trainer.max_epochs=20") == 2
    assert "(continued, 2/2)" in out  # the columns that did not fit, in a second block
    assert "failed" not in out  # a column of zeros is left off the terminal


def test_each_dataset_and_protocol_is_a_table_of_its_own(tmp_path):
    write(tmp_path / "mnist", 0.8, normal=3)
    fashion = write(tmp_path / "fashion", 0.7, normal=0)
    data = json.loads((fashion / "results.json").read_text())
    data["dataset"] = "fashion_mnist"
    data["protocol"]["normal"] = ["T-shirt/top"]
    (fashion / "results.json").write_text(json.dumps(data))
    tables = report([tmp_path], plots=False, echo=False)["tables"]["auroc"]
    assert [(t.title, t.header[1:-3]) for t in tables] == [
        ("AUROC · fashion_mnist · gpnd_folds", ["T-shirt/top"]), ("AUROC · mnist · gpnd_folds", ["3"])]
    # every row has every class of its own table: no `*`
    assert not any(row[-3].endswith("*") for t in tables for row in t.rows)
    # auroc.csv in long format, for pandas: one line per table × row × class, and the row's mean
    report([tmp_path], plots=False, echo=False, out=tmp_path / "out")
    import csv

    with open(tmp_path / "out" / "auroc.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert {(r["table"], r["column"], r["value"]) for r in lines} == {
        ("AUROC · fashion_mnist · gpnd_folds", "T-shirt/top", "0.7"), ("AUROC · fashion_mnist · gpnd_folds", "mean ± std", "0.7"),
        ("AUROC · mnist · gpnd_folds", "3", "0.8"), ("AUROC · mnist · gpnd_folds", "mean ± std", "0.8")}


def test_figures_without_scores_are_not_written_and_a_line_says_why(tmp_path):
    for normal in (0, 1):
        write(tmp_path / str(normal), 0.8, normal)  # results.json only, as in reproduced/
    out = report([tmp_path], echo=False)
    names = {p.name for p in out["files"] if p.suffix == ".png"}
    assert names == {"bars_auroc_mnist_gpnd_folds.png"}
    md = (out["out_dir"] / "report.md").read_text()
    assert "no ROC curves or score histograms, since none of its 2 runs kept scores.npz" in md


def test_a_table_over_outlier_shares_is_drawn_over_the_share(tmp_path):
    from anomaly.report import plots as report_plots

    for ratio in (0.1, 0.3):
        for normal in (0, 1):
            cfg = config(normal)
            cfg["protocol"]["outlier_ratio"] = ratio
            data_protocol = {"outlier_ratio": ratio}
            path = write(tmp_path / f"{ratio}_{normal}", 0.9 - ratio / 2, normal, cfg=cfg, budget="reduced",
                         reproduce={"table": "gpnd_mnist", "metric": "f1_paper", "paper_source": "GPND",
                                    "cell": {"protocol.outlier_ratio": ratio, "protocol.normal": normal},
                                    "paper": {"f1_paper": 0.95 - ratio / 10}, "paper_mean": {}})
            data = json.loads((path / "results.json").read_text())
            data["protocol"].update(data_protocol)
            (path / "results.json").write_text(json.dumps(data))
    runs, _ = report_plots_runs(tmp_path)
    (table,) = layout.paper_tables(runs)
    assert report_plots.row_setting(table) == ("outlier_ratio", [0.1, 0.3])
    (path,) = report_plots.plot_paper([table], lambda t: ["f1_paper"], tmp_path)
    assert path.exists() and path.stat().st_size > 10_000
    assert report_plots.metric_axis("f1_paper", table.runs) == "F1, inliers positive"


def test_a_reproduced_tables_rows_are_its_grid_keys_from_the_table_config(tmp_path, monkeypatch):
    """The row keys come from conf/table/<table>.yaml's grid (less the classes and repetitions),
    with any key a run's cell adds beyond it; without the table config, from the recorded cell."""
    from anomaly.reproduce.tables import Table

    budgets = {b: {} for b in ("paper", "reduced", "smoke")}
    config_ = Table.from_config({"name": "gpnd_mnist", "metric": "f1_inlier", "budgets": budgets,
                                 "grid": {"protocol.normal": [[0], [1]], "protocol.fold": [0, 1],
                                          "protocol.outlier_ratio": [0.1, 0.3]},
                                 "test_keys": ["protocol.outlier_ratio"],
                                 "paper": [{"where": {"protocol.outlier_ratio": 0.1}, "f1_inlier": 0.96}]})
    cell = {"protocol.n_test": 40, "protocol.normal": [0], "protocol.fold": 1, "protocol.outlier_ratio": 0.3}
    write(tmp_path / "run", 0.9, fold=1, budget="reduced",
          reproduce={"table": "gpnd_mnist", "metric": "f1_inlier", "cell": cell})
    (run,) = load.load_runs([tmp_path])
    assert group.row_keys(run) == ["protocol.n_test", "protocol.outlier_ratio"]  # recorded: no config
    monkeypatch.setattr(table_conf, "table_config", lambda name: config_ if name == "gpnd_mnist" else None)
    assert group.row_keys(run) == ["protocol.outlier_ratio", "protocol.n_test"]  # the grid's, then the cell's own
    assert group.row_of(run) == (("protocol.n_test", 40), ("protocol.outlier_ratio", 0.3))
    group.assign_rows([run])
    (table,) = layout.paper_tables([run])
    assert table.metrics() == ["f1_inlier"]  # the table config's metric and published numbers


def test_a_metric_is_one_the_runs_recorded(tmp_path):
    from anomaly.report.load import allowed_metrics, check_metrics

    write(tmp_path / "run", 0.9)
    runs = load.load_runs([tmp_path])
    assert allowed_metrics(runs) == ["auroc", "f1", "f1_inlier", "f1_paper"]
    with pytest.raises(SystemExit, match="--metric fpr95: not a metric; choose from auroc, f1, f1_inlier, f1_paper"):
        check_metrics(["auroc", "fpr95"], runs)
    check_metrics(["fpr95"], [])  # no run recorded a number: nothing to check against


def report_plots_runs(root):
    runs, left_out = load.select_runs(load.load_runs([root]))
    group.assign_rows(runs)
    return runs, left_out


def test_examples_name_each_image_class_and_score(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from anomaly import pipeline
    from anomaly.evaluation.gather import ScoredSplit

    labels = torch.tensor([0, 0, 7, 3])
    scored = ScoredSplit(score=torch.tensor([0.1, 0.4, 2.5, 0.2]), anomalous=labels != 0, label=labels,
                         index=torch.tensor([10, 11, 12, 13]))
    images = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    seen = {}
    model = SimpleNamespace(test_scores=scored, evaluator=SimpleNamespace(test_problem=None),
                            examples=lambda x: (seen.setdefault("shape", x.shape) and x.float(), None))
    dm = SimpleNamespace(data=SimpleNamespace(images=images, class_names=[f"c{i}" for i in range(10)]))
    drawn = {}
    monkeypatch.setattr(pipeline, "plot_examples", lambda groups, path, title: drawn.update(groups, title=title))
    pipeline.write_examples(tmp_path, model, dm, "ae · mnist · one_class · normal 0 · seed 0")
    inputs, recon, captions = drawn["anomalous, highest scores"]
    assert recon is None and captions == ["c7\n2.5", "c3\n0.2"]  # a method without reconstructions: inputs only
    assert drawn["normal, lowest scores"][2] == ["c0\n0.1", "c0\n0.4"]
    assert drawn["title"].startswith("ae · mnist · one_class · normal 0 · seed 0")


def test_run_titles_name_protocol_ratio_and_seed():
    from anomaly.results import run_title

    summary = {"method": "gpnd", "dataset": "mnist", "seed": 2,
               "protocol": {"name": "gpnd_folds", "normal": ["3"], "outlier_ratio": 0.3, "fold": 1}}
    assert run_title(summary) == "gpnd · mnist · gpnd_folds · normal 3 · outlier_ratio 0.3 · fold 1 · seed 2"
    summary.update(epochs=6, paper_settings={"keys": {"trainer.max_epochs": 80}})  # and what it trained
    assert run_title(summary).endswith("· seed 2 · 6/80 ep")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions make, kept open instead of written."""
    from anomaly import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or Path(path))
    yield figures
    plots.pyplot().close("all")


def test_bars_have_error_bars_only_where_a_cell_has_a_spread(drawn):
    from anomaly import plots

    plots.plot_class_bars(["0", "1"], {"ae": ([0.8, 0.9], [0.05, float("nan")]),
                                       "gpnd": ([0.7, 0.6], [float("nan"), float("nan")])}, "x.png")
    (ax,) = drawn[0].axes
    from matplotlib.container import BarContainer

    ae, gpnd = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert ae.errorbar is not None and gpnd.errorbar is None  # one run per cell: no bar of zero height
    (segments,) = ae.errorbar.lines[2]
    assert [len(s) for s in segments.get_segments()] == [2, 0]  # a bar for class 0, none for class 1


def test_a_run_roc_marks_the_validation_thresholds_point(drawn):
    from anomaly import plots

    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.25])
    anomalous = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    plots.plot_roc(scores, anomalous, 0.89, "roc.png", threshold=0.28)
    (ax,) = drawn[0].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # above 0.28: one of three normals (FPR 0.33), two of three anomalies (TPR 0.67)
    assert "validation threshold (FPR 0.33, TPR 0.67)" in labels
    plots.plot_score_hist(scores, anomalous, 0.28, "hist.png")
    assert "threshold 0.28 (validation)" in [t.get_text() for t in drawn[1].axes[0].get_legend().get_texts()]


def test_classes_come_in_the_datasets_label_order(tmp_path):
    # Fashion-MNIST: T-shirt/top (0) before Trouser (1) before Ankle boot (9), not alphabetically
    for i, name in ((9, "Ankle boot"), (0, "T-shirt/top"), (1, "Trouser")):
        path = write(tmp_path / name.replace("/", "_"), 0.8, normal=i)
        data = json.loads((path / "results.json").read_text())
        data.update(dataset="fashion_mnist")
        data["protocol"].update(normal=[name], normal_ids=[i])
        (path / "results.json").write_text(json.dumps(data))
    (table,) = report([tmp_path], plots=False, echo=False)["tables"]["auroc"]
    assert table.header[1:4] == ["T-shirt/top", "Trouser", "Ankle boot"]


def test_a_mean_over_fewer_classes_than_the_papers_is_never_set_against_it(tmp_path, real_table_configs):
    """GPND's MNIST F1 at 50 % outliers is a mean over the 10 digits: one digit of ours is shown
    beside it as '1 of 10 classes', with no Δ, in the table and in the figure."""
    def run(normal: int) -> None:
        write(tmp_path / f"{normal}", 0.9, normal, budget="paper",
              command="python -m anomaly.reproduce table=gpnd_mnist budget=paper",
              reproduce={"table": "gpnd_mnist", "metric": "auroc", "paper_source": "GPND",
                         "cell": {"protocol.normal": [normal], "protocol.fold": 0, "protocol.outlier_ratio": 0.5},
                         "paper": {"auroc": 0.93}, "paper_mean": {}, "trained_in": f"n{normal}"})

    run(3)
    lines, table = paper_rows(report([tmp_path], plots=False, echo=False), "f1_paper")
    assert lines["outlier_ratio=0.5 · 3"][3:] == ["—", "—"]  # the paper's number is the digits' mean
    assert lines["outlier_ratio=0.5 · mean (1 of 10 classes)"][3:] == ["0.932", "n/a"]
    assert table.numbers[-1][2] is None  # no Δ in the CSV either
    for normal in range(10):
        if normal != 3:
            run(normal)
    lines, _ = paper_rows(report([tmp_path], plots=False, echo=False), "f1_paper")
    assert lines["outlier_ratio=0.5 · mean"][3:] == ["0.932", "-0.132 no spread"]  # every digit: compared


def test_every_table_says_the_schedule_its_numbers_ran(tmp_path):
    """A cut-down schedule is never invisible: '6/80 ep' (epochs done of the paper's) once in a
    table's title where its runs share it, else on each row."""
    paper = {"keys": {"trainer.max_epochs": 80}}
    for a in (1, 2):
        reproduced(tmp_path / f"a{a}", 0.8, a, 0, paper=0.85, epochs=6, paper_settings=paper)
    out = report([tmp_path], plots=False, echo=False)
    (table,) = out["paper"]["auroc"]
    assert table.title.endswith("· 6/80 ep")
    (classes,) = out["tables"]["auroc"]
    assert classes.title.endswith("6/80 ep") and classes.rows[0][0] == "adae"
    # a run of the same table and budget at another schedule: each row says its own
    reproduced(tmp_path / "a3", 0.8, 3, 1, paper=0.85, epochs=80, paper_settings=paper)
    (classes,) = report([tmp_path], plots=False, echo=False)["tables"]["auroc"]
    assert sorted(row[0] for row in classes.rows) == ["adae · 6/80 ep", "adae · 80/80 ep"]
    assert "ep" not in classes.title


def test_runs_that_one_compute_budget_stopped_at_their_own_epochs_share_a_row(tmp_path):
    """A compute budget stops each class's run where its FLOPs run out (a class with fewer images
    gets more epochs): one config, one row, its label the epochs' span."""
    paper = {"keys": {"trainer.max_epochs": 80}}
    for a, epochs in ((1, 3), (2, 4), (3, 3)):
        reproduced(tmp_path / f"a{a}", 0.8, a, 0, paper=0.85, epochs=epochs, paper_settings=paper,
                   budget="compute", cost={"budget_flops": 5e12, "training_flops": 4.9e12})
    # another budget's run (e.g. kept before the budget changed): a row of its own
    reproduced(tmp_path / "b", 0.8, 4, 0, paper=0.85, epochs=6, paper_settings=paper, budget="compute",
               cost={"budget_flops": 1e13, "training_flops": 9.9e12})
    (classes,) = report([tmp_path], plots=False, echo=False)["tables"]["auroc"]
    assert sorted(row[0] for row in classes.rows) == ["adae · 3–4/80 ep", "adae · 6/80 ep"]


@pytest.mark.slow
def test_the_terminal_report_on_the_kept_results_leads_with_a_summary(tmp_path):
    """`python -m anomaly.report reproduced` at 80 columns: a summary line per reproduced table
    (with why a table has no Δ), the leaderboards, at most 300 lines; the Markdown holds every
    table, benchmark_mnist as one table of its 10 methods."""
    import os

    root = Path(__file__).resolve().parents[1]
    proc = cli.run("anomaly.report", ["reproduced", "--no-plots", "--out", str(tmp_path)], cwd=root,
                   env={**os.environ, "COLUMNS": "80"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) <= 300 and max(len(line) for line in lines if not line.startswith("report: ")) <= 80  # a path is whole
    assert "Reproduced tables (every table: report.md, or --full)" in proc.stdout
    assert "no Δ, anogan_mnist: ours covers 1 of 10 classes of the paper's means" in " ".join(proc.stdout.split())
    # the comparison's leaderboards (budget=compute) in full; the other budgets' named, in report.md
    assert "Leaderboard: benchmark_mnist · budget compute" in proc.stdout
    assert "Leaderboard: benchmark_mnist · budget reduced" not in proc.stdout
    assert "Also in report.md (or --full): benchmark_fashion_mnist · budget reduced;" in " ".join(proc.stdout.split())
    text = (tmp_path / "report.md").read_text()
    blocks = text.split("\n\n")
    # one block per budget kept: the reduced one holds the ten methods, the compute one ocsvm_tuned too
    for budget, count in (("reduced", 10), ("compute", 11)):
        (at,) = [i for i, block in enumerate(blocks)
                 if block.startswith(f"### AUROC · mnist · one_class · table=benchmark_mnist · budget={budget}")]
        methods = [row.split("|")[1].strip() for row in blocks[at + 1].splitlines()[2:]]
        assert len(methods) == count and methods[0].startswith("adae"), blocks[at + 1]

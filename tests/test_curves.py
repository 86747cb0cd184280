"""Training curves followed across the runs a stopped training resumed in."""

from __future__ import annotations

import json

import pytest

from anomaly.reproduce.curves import cell_curves, cell_keys, main


def write_log(run_dir, cell, rows, results=None):
    log = run_dir / cell / "csv" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,train/loss,val/auroc\n" +
                   "".join(f"{e},{s},0.5,{'' if v is None else v}\n" for e, s, v in rows))
    if results is not None:
        (run_dir / cell / "results.json").write_text(json.dumps(results))


def test_a_resumed_training_is_one_curve_the_later_run_winning_a_step(tmp_path):
    # stopped after epoch 2 (its step-7 value logged), resumed in a later run that logs step 7 again
    write_log(tmp_path / "2026-01-01_10-00-00", "arae_linf-normal8", [(0, 3, None), (1, 7, 0.6), (2, 11, None)])
    write_log(tmp_path / "2026-01-01_12-00-00", "arae_linf-normal8", [(1, 7, 0.61), (3, 15, 0.7), (4, 16, 0.7)],
              results={"status": "ok", "epochs": 4, "metrics": {"auroc": 0.71}})
    write_log(tmp_path / "2026-01-01_12-00-00", "dae-normal8", [(1, 7, 0.8)])
    curves = cell_curves(tmp_path, "val/auroc")
    linf = curves["arae_linf-normal8"]
    # epochs trained at each value; the check after the last epoch (logged as epoch 4) is the 4th
    assert linf["points"] == [[2, 7, 0.61], [4, 16, 0.7]]
    assert linf["finished"] and linf["test"] == 0.71 and linf["runs"] == ["2026-01-01_10-00-00", "2026-01-01_12-00-00"]
    assert curves["dae-normal8"]["finished"] is False and curves["dae-normal8"]["points"] == [[2, 7, 0.8]]


def test_cell_names_give_their_grid_values():
    assert cell_keys("arae_linf-normal8") == {"variant": "arae_linf", "normal": "8"}
    assert cell_keys("n_normal7-draw3") == {"n_normal": "7", "draw": "3"}


def test_a_folder_without_logs_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no CSV logs with val/auroc" in capsys.readouterr().err


def test_merge_keeps_the_earlier_files_cells_that_the_runs_no_longer_hold(tmp_path):
    out = tmp_path / "curves.json"
    first = tmp_path / "first"
    write_log(first / "2026-01-01_10-00-00", "dae-normal8", [(1, 7, 0.8)],
              results={"status": "ok", "epochs": 2, "metrics": {"auroc": 0.83}})
    write_log(first / "2026-01-01_10-00-00", "arae_union-normal8", [(0, 3, None)])  # lost before a check
    assert main([str(first), "--out", str(out)]) == 0
    made = json.loads(out.read_text())
    # the first runs are gone; a later folder holds the union cell only
    second = tmp_path / "second"
    write_log(second / "2026-01-02_10-00-00", "arae_union-normal8", [(1, 7, 0.9)],
              results={"status": "ok", "epochs": 2, "metrics": {"auroc": 0.91}})
    assert main([str(second), "--out", str(out), "--merge"]) == 0
    merged = json.loads(out.read_text())
    assert sorted(merged["cells"]) == ["arae_union-normal8", "dae-normal8"]
    assert merged["cells"]["arae_union-normal8"]["points"] == [[2, 7, 0.9]]
    dae = merged["cells"]["dae-normal8"]
    assert dae["test"] == 0.83 and dae["from"] == {"command": made["command"], "created": made["created"]}
    assert "--merge" in merged["command"]
    # without --merge the file holds what the runs hold
    assert main([str(second), "--out", str(out)]) == 0
    assert sorted(json.loads(out.read_text())["cells"]) == ["arae_union-normal8"]

"""The benchmark suite (benchmarks/, at the repository root) at its tiny size: each benchmark's
baseline and ours give the same numbers (nothing is timed here), the table prints."""

import math

import pytest
import torch

from benchmarks import __main__ as bench_main
from benchmarks import scale
from benchmarks.core import Check, Timed, result_row, run_case
from benchmarks.sizes import QUICK

CPU = torch.device("cpu")


def value(out):
    return out.value if isinstance(out, Timed) else out


def outputs(case):
    if case.check_baseline is not None:
        return case.check_baseline(), case.check_ours()
    return value(case.baseline()), value(case.ours())


@pytest.mark.slow
@pytest.mark.parametrize("bench", ["1", "2", "3", "4", "5", "8"])
def test_baseline_and_ours_agree(bench, tmp_path):
    cases = bench_main.cases_for(bench, QUICK, CPU, tmp_path)
    assert cases
    for case in cases:
        check = case.compare(*outputs(case))
        assert check.ok is not False, f"{case.what}: {check.text}"
        if check.ok is None:  # different models (f-AnoGAN vs AnoGAN): both must still score
            assert "finite" in check.text and "not finite" not in check.text


@pytest.mark.slow
def test_scale_points_grow_with_the_training_set(tmp_path):
    points, row = scale.run(QUICK, CPU, tmp_path)
    assert [p["factor"] for p in points] == list(QUICK.scale_factors)
    assert points[1]["images"] == pytest.approx(2 * points[0]["images"], rel=0.1)
    assert points[1]["batches"] >= points[0]["batches"]
    assert all(p["seconds"] > 0 and p["epoch_memory_mb"] >= 0 for p in points)
    assert math.isfinite(scale.slope(points)) and len(row) == 7
    assert "| 2× |" in scale.points_table(points, CPU)


def test_timing_takes_medians_and_interleaves(tmp_path):
    case = bench_main.cases_for("4", QUICK, CPU, tmp_path)[0]
    calls = []
    base, ours = case.baseline, case.ours
    case.baseline = lambda: calls.append("b") or base()
    case.ours = lambda: calls.append("o") or ours()
    result = run_case(case, repeats=2, device=CPU)
    assert result.error is None and result.check.ok
    assert calls == ["b", "o", "b", "o", "o", "b"]  # warm-up, then alternating order
    assert len(result.baseline_all) == len(result.ours_all) == 2 and result.ratio > 0
    row = result_row(result)
    assert len(row) == 7 and "faster" in row[4] and "✓" in row[6]


def test_a_quoted_baseline_times_ours_only(tmp_path):
    case = bench_main.cases_for("4", QUICK, CPU, tmp_path)[0]
    calls = []
    ours = case.ours
    case.baseline, case.ours = None, lambda: calls.append("o") or ours()
    case.quoted_baseline_s, case.compare = 10.0, lambda a, b: Check(None, "quoted")
    result = run_case(case, repeats=2, device=CPU)
    assert result.error is None and calls == ["o", "o", "o"] and result.baseline_all == []
    assert result.baseline_s == 10.0 and math.isclose(result.ratio, 10.0 / result.ours_s)
    assert result_row(result)[2] == "10.00 s"


def test_cli_prints_the_markdown_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert bench_main.main(["--quick", "--only", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| # | what: baseline → ours | baseline | ours | ratio | target | same numbers? |" in printed
    assert "AnoGAN latent search" in printed and "Load average" in printed
    assert out.read_text().strip() == printed.strip()
    with pytest.raises(SystemExit):
        bench_main.main(["--quick", "--only", "9"])
    with pytest.raises(SystemExit):
        bench_main.main(["--quick", "--set", "no_such_field=1"])

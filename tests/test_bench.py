"""The benchmark suite (benchmarks/, at the repository root) at its tiny size: each benchmark's
baseline and ours give the same numbers (nothing is timed here), the table prints."""

import math

import pytest
import torch

from benchmarks import __main__ as bench_main
from benchmarks import scale
from benchmarks.core import Case, Check, Goal, Timed, result_row, run_case
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
    assert math.isfinite(scale.slope(points)) and len(row) == 8
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
    assert len(row) == 8 and row[1] == str(torch.get_num_threads())
    assert "faster" in row[5] and "✓" in row[7]


def test_a_quoted_baseline_times_ours_only(tmp_path):
    case = bench_main.cases_for("4", QUICK, CPU, tmp_path)[0]
    calls = []
    ours = case.ours
    case.baseline, case.ours = None, lambda: calls.append("o") or ours()
    case.quoted_baseline_s, case.compare = 10.0, lambda a, b: Check(None, "quoted")
    result = run_case(case, repeats=2, device=CPU)
    assert result.error is None and calls == ["o", "o", "o"] and result.baseline_all == []
    assert result.baseline_s == 10.0 and math.isclose(result.ratio, 10.0 / result.ours_s)
    assert result_row(result)[3] == "10.00 s"


def fake_case(baseline_s: float, ours_s: float, goal: Goal, same: bool = True, **fields) -> Case:
    """A row whose paths time nothing: each returns a Timed with its seconds fixed."""
    return Case(bench="4", what="fake row", baseline_label="b", ours_label="o",
                baseline=lambda: Timed("x", baseline_s), ours=lambda: Timed("x", ours_s),
                compare=lambda a, b: Check(same, "same" if same else "different"), goal=goal, **fields)


def test_a_quoted_time_from_another_thread_count_is_shown_not_judged():
    case = fake_case(0.0, 1.0, Goal("speedup", 100.0), quoted_baseline_s=2.0, quoted_threads=2,
                     quoted_when="issue 8")
    case.baseline = None
    for threads, met in ((2, False), (1, None)):
        result = run_case(case, repeats=1, device=CPU)
        result.threads = threads
        assert result.ratio == 2.0 and result.verdict().met is met
    assert "not judged: quoted at 2 threads (issue 8), not like for like" in result_row(result)[6]


def test_a_target_set_at_one_thread_count_is_judged_only_there():
    case = fake_case(2.0, 1.0, Goal("speedup", 3.5, threads=2))
    for threads, met in ((2, False), (1, None)):
        result = run_case(case, repeats=1, device=CPU)
        result.threads = threads
        assert result.verdict().met is met
    assert result_row(result)[6] == "≥ 3.5× faster at 2 threads — not judged here"


def test_a_row_run_only_where_judged_runs_at_its_targets_thread_count(monkeypatch, capsys):
    judged_at_2 = fake_case(2.0, 1.0, Goal("speedup", 1.5, threads=2), only_where_judged=True)
    assert judged_at_2.thread_counts([1, 2]) == [2]
    assert judged_at_2.thread_counts([1]) == [1]  # its count not asked for: shown, not judged
    assert fake_case(2.0, 1.0, Goal("speedup", 1.5), only_where_judged=True).thread_counts([1, 2]) == [1, 2]
    assert fake_case(2.0, 1.0, Goal("speedup", 1.5), once=True).thread_counts([1, 2]) == [1]
    monkeypatch.setattr(bench_main, "cases_for", lambda *args: [judged_at_2])
    assert bench_main.main(["--quick", "--only", "4", "--threads", "1,2", "--check"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "[4. fake row" in line]
    assert len(lines) == 1 and "2 threads]" in lines[0] and lines[0].startswith("met")


@pytest.mark.parametrize("baseline_s, ours_s, same, status", [
    (1.0, 1.04, True, 0),   # 1.04× the time: meets ≤ 1.05
    (1.0, 1.20, True, 1),   # 1.20× the time: misses it
    (1.0, 1.00, False, 1),  # on target, but the two paths gave different numbers
])
def test_check_exits_1_when_a_row_misses_its_target(monkeypatch, capsys, baseline_s, ours_s, same, status):
    case = fake_case(baseline_s, ours_s, Goal("overhead", 1.05), same)
    monkeypatch.setattr(bench_main, "cases_for", lambda *args: [case])
    assert bench_main.main(["--quick", "--only", "4", "--threads", "1,2"]) == 0  # without --check: 0
    assert bench_main.main(["--quick", "--only", "4", "--threads", "1,2", "--check"]) == status
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "[4. fake row" in line]
    assert len(lines) == 2 and "≤ 1.05× the time" in lines[0]  # each thread count's row and its target
    assert ("MISSED" in lines[0]) == bool(status)
    assert ("missed: exit status 1" in out) == bool(status)


def test_check_measures_a_row_missed_by_its_ratio_again_and_says_so(monkeypatch, capsys):
    def noisy_case(ours_seconds, same=True):
        seconds = iter(ours_seconds)  # one per call of ours: the warm-up, then the timed call
        case = fake_case(1.0, 0.0, Goal("overhead", 1.10), same)
        case.ours = lambda: Timed("x", next(seconds))
        return case

    # a miss by noise (1.20× then 1.00×): measured again, met, and the table says so
    monkeypatch.setattr(bench_main, "cases_for", lambda *args: [noisy_case([1, 1.2, 1, 1.0])])
    assert bench_main.main(["--quick", "--only", "4", "--threads", "1", "--check"]) == 0
    out = capsys.readouterr().out
    assert "met    [4. fake row, 1 thread] ≤ 1.1× the time: 1.00× the time (measurement 2; missed before: " \
           "1.20× the time)" in out
    assert "≤ 1.1× the time ✓ (measurement 2; missed before: 1.20× the time)" in out  # the table's cell
    # a regression misses every measurement; --retries 0 judges the first one
    for ours, retries, status in (([1, 1.2, 1, 1.3], "1", 1), ([1, 1.2, 1, 1.0], "0", 1)):
        monkeypatch.setattr(bench_main, "cases_for", lambda *args, o=ours: [noisy_case(o)])
        assert bench_main.main(["--quick", "--only", "4", "--threads", "1", "--check", "--retries", retries]) == status
    assert "MISSED [4. fake row, 1 thread] ≤ 1.1× the time: 1.20× the time\n" in capsys.readouterr().out
    # different numbers are not noise: not measured again (a second measurement would need more calls)
    monkeypatch.setattr(bench_main, "cases_for", lambda *args: [noisy_case([1, 1.0], same=False)])
    assert bench_main.main(["--quick", "--only", "4", "--threads", "1", "--check", "--retries", "3"]) == 1


def test_check_counts_a_row_that_fails_as_missed(monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("no data")
    monkeypatch.setattr(bench_main, "cases_for", broken)
    assert bench_main.main(["--quick", "--only", "4", "--threads", "1", "--check"]) == 1
    assert "error while setting up: no data" in capsys.readouterr().out


def test_cli_prints_the_markdown_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert bench_main.main(["--quick", "--only", "2", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| # | threads | what: baseline → ours | baseline | ours | ratio | target | same numbers? |" in printed
    assert "AnoGAN latent search" in printed and "Load average" in printed
    assert out.read_text().strip() == printed.strip()
    with pytest.raises(SystemExit):
        bench_main.main(["--quick", "--only", "9"])
    with pytest.raises(SystemExit):
        bench_main.main(["--quick", "--set", "no_such_field=1"])
    with pytest.raises(SystemExit):
        bench_main.main(["--quick", "--threads", "0"])


def test_a_saved_run_replaces_the_readme_section_and_nothing_else(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nprose\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n\nmore prose\n")
    saved = tmp_path / "bench.md"
    saved.write_text("### `python -m benchmarks --threads 1,2` (2026-12-07 06:30)\n\n| # | threads |\n")
    assert bench_main.main(["--from", str(saved), "--readme", str(readme)]) == 0
    assert readme.read_text() == ("# Title\n\nprose\n<!-- bench:start -->\n### `python -m benchmarks --threads 1,2` "
                                  "(2026-12-07 06:30)\n\n| # | threads |\n<!-- bench:end -->\n\nmore prose\n")
    readme.write_text("no section\n")
    with pytest.raises(SystemExit, match="no <!-- bench:start -->"):
        bench_main.main(["--from", str(saved), "--readme", str(readme)])
    with pytest.raises(SystemExit):  # --from alone: nowhere to put it
        bench_main.main(["--from", str(saved)])

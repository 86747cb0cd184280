"""The benchmark tables (conf/table/benchmark_*.yaml: a variant per method config, per-variant
budgets) and their leaderboard in the report: ranks per class, the Friedman / Nemenyi test, the
critical-difference diagram, the field's published means and the README's leaderboard section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly import AnomalyError, provenance
from anomaly.report import main, readme, report
from anomaly.report.leaderboard import END, START, leaderboards, significance_line
from anomaly.reproduce.tables import Cell, Table
from tests.test_report import config, write

METHODS = sorted(p.stem for p in (provenance.CONF_DIR / "method").glob("*.yaml"))
BUDGETS = {"paper": {}, "reduced": {"seed": 0}, "smoke": {}}


def benchmark(**extra) -> Table:
    return Table.from_config({"name": "bench", "metric": "auroc", "variants_from": "method",
                              "variant_settings": {"variant_overrides": ["dataset=mnist"],
                                                   "ae": {"trainer.max_epochs": 100}},
                              "grid": {"protocol.normal": [[0], [1]], "seed": [0, 1, 2]},
                              "budgets": BUDGETS, **extra})


# ---- the tables ----------------------------------------------------------------------------------
def test_every_method_config_is_a_variant_and_a_new_one_joins_without_an_edit(tmp_path, monkeypatch):
    table = benchmark()
    assert sorted(table.variants) == METHODS and table.grid["variant"] == METHODS
    assert list(table.grid) == ["variant", "protocol.normal", "seed"]  # methods are the rows
    assert table.variants["ae"] == ["method=ae", "dataset=mnist", "trainer.max_epochs=100"]
    assert table.variants["gpnd"] == ["method=gpnd", "dataset=mnist"]
    # a method config dropped into conf/method/ is in the next table read
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    for name in ("ae", "gpnd", "my_method"):
        (conf / "method" / f"{name}.yaml").write_text("_target_: x\n")
    monkeypatch.setattr(provenance, "CONF_DIR", conf)
    assert benchmark().grid["variant"] == ["ae", "gpnd", "my_method"]


def test_the_real_benchmark_tables_run_every_method_on_one_protocol():
    from anomaly.report.table_conf import table_config

    for name, dataset in (("benchmark_mnist", "mnist"), ("benchmark_fashion_mnist", "fashion_mnist")):
        table = table_config(name)
        assert table.grid["variant"] == METHODS and len(table.grid["protocol.normal"]) == 10
        assert table.grid["seed"] == [0, 1, 2] and table.budget_restrictions("reduced") == {"seed": 0}
        cell = Cell.of({"variant": "gpnd", "protocol.normal": [3], "seed": 1})
        overrides = table.overrides(cell, "reduced", [])
        assert overrides[:3] == ["method=gpnd", f"dataset={dataset}", "protocol=one_class"]
        assert "++protocol.n_test=1000" in overrides and "++trainer.max_epochs=2" in overrides
        assert "protocol.normal=[3]" in overrides and "seed=1" in overrides and "++seed=0" not in overrides
        assert {"method", "source", "auroc"} <= set(table.field_means[0])


def test_a_variant_budget_applies_to_its_variant_only_and_the_command_line_wins():
    table = benchmark(variant_budgets={"reduced": {"gpnd": {"trainer.max_epochs": 2}}})
    gpnd = Cell.of({"variant": "gpnd", "protocol.normal": [0], "seed": 0})
    ae = Cell.of({"variant": "ae", "protocol.normal": [0], "seed": 0})
    assert "++trainer.max_epochs=2" in table.overrides(gpnd, "reduced", [])
    assert not any("max_epochs=2" in o for o in table.overrides(ae, "reduced", []))
    assert "++trainer.max_epochs=2" not in table.overrides(gpnd, "reduced", ["trainer.max_epochs=5"])
    # a budget's grid key restricts the grid; the cell's own value is what the run gets
    assert table.budget_restrictions("reduced") == {"seed": 0} and table.budget_restrictions("paper") == {}
    assert len(table.cells(table.budget_restrictions("reduced"))) == len(METHODS) * 2
    assert not any(o.startswith("++seed") for o in table.overrides(gpnd, "reduced", []))


@pytest.mark.parametrize("extra, message", [
    ({"variant_budgets": {"reduced": {"no_such": {}}}}, r"variant_budgets.reduced names \['no_such'\], not among"),
    ({"variant_budgets": {"equal_steps": {"ae": {}}}}, "variant_budgets for budget equal_steps, which it does not"),
    ({"variant_settings": {"no_such": {}}}, r"variant_settings for \['no_such'\], which are not in conf/method/"),
    ({"variants_from": "dataset"}, "variants_from='dataset'; only 'method' is known"),
    ({"field": [{"method": "X", "auroc": 0.9}]}, "each `field` entry needs a method, a source and its auroc"),
])
def test_a_malformed_benchmark_table_is_refused_in_one_line(extra, message):
    with pytest.raises(AnomalyError, match=message):
        benchmark(**extra)


# ---- the leaderboard -----------------------------------------------------------------------------
# per class: arae first, ae second, gpnd third, vae last (vae misses class 5); two seeds each
STRENGTH = {"arae": 0.95, "ae": 0.90, "gpnd": 0.80, "vae": 0.70}


def bench_run(root: Path, method: str, normal: int, seed: int, auroc: float, budget: str = "reduced",
              table: str = "benchmark_mnist", **fields) -> Path:
    info = {"table": table, "cell": {"variant": method, "protocol.normal": [normal], "seed": seed},
            "paper": {}, "paper_mean": {}, "metric": "auroc", "paper_source": "benchmark",
            "trained_in": f"{method}-{normal}-{seed}"}
    cfg = config(normal, seed)
    cfg["method"] = {"_target_": f"anomaly.methods.{method}.X"}
    return write(root / f"{method}-{normal}-{seed}", auroc, normal, seed, method=method, cfg=cfg, budget=budget,
                 reproduce=info, command=f"python -m anomaly.reproduce table={table} budget={budget}", **fields)


@pytest.fixture
def bench_runs(tmp_path) -> Path:
    root = tmp_path / "reproduced"
    for method, base in STRENGTH.items():
        for normal in range(6):
            if method == "vae" and normal == 5:
                continue
            for seed in (0, 1):
                bench_run(root, method, normal, seed, base + 0.01 * normal + 0.004 * seed)
    return root


def test_ranks_the_friedman_test_and_the_critical_difference(bench_runs):
    out = report([bench_runs], echo=False, plots=False)
    (board,) = leaderboards(out["runs"])
    assert board.methods == ["arae", "ae", "gpnd", "vae"]
    assert board.classes == ["0", "1", "2", "3", "4", "5"] and board.complete == ["0", "1", "2", "3", "4"]
    assert board.ranks == {"arae": 1.0, "ae": 2.0, "gpnd": 3.0, "vae": 4.0}
    # Friedman: 12 / (n k (k + 1)) Σ R² − 3 n (k + 1) with n = 5 classes, k = 4: 0.12 · 750 − 75 = 15
    assert board.test.statistic == pytest.approx(15.0) and board.test.pvalue < 0.01
    # Nemenyi: q(0.05, 4) = 2.569 × √(k (k + 1) / 6n) = 2.569 × √(2/3)
    assert board.test.cd == pytest.approx(2.569 * (2 / 3) ** 0.5, abs=2e-3)
    # ranks 1 and 4 differ by more than the CD (2.10); 1 and 3 do not
    assert board.significantly_better("arae", "vae") and not board.significantly_better("arae", "gpnd")
    assert not board.significantly_better("vae", "arae")
    assert board.mean("arae") == pytest.approx(0.95 + 0.02 + 0.002)
    line = significance_line(board)
    assert "χ² = 15.0" in line and "arae ranks significantly above vae; not distinguishable from ae, gpnd" in line
    text = (bench_runs / "report" / "report.md").read_text()
    assert "## Leaderboard: benchmark_mnist · budget reduced" in text
    assert "| arae | **0.952 ± 0.002** |" in text
    assert "the 5 classes every method has" in text and "| vae |" in text and "| — | 0.722 | 4.00 |" in text
    assert "Deep SVDD 0.948 (Ruff et al., ICML 2018)" in text  # the field's published means
    # the diagram says what it ranks, over which blocks, and gives each method's rank by its name
    from anomaly.report.leaderboard_figures import cd_labels, cd_title

    title = cd_title(board)
    assert "average rank of test AUROC" in title and "over 5 classes × 2 seeds" in title and "CD = 2.10" in title
    assert cd_labels(board)["arae"] == "ARAE (1.0)" and cd_labels(board)["vae"] == "VAE (4.0)"


def test_a_suspect_number_still_ranks_and_is_marked_and_named(bench_runs, capsys):
    from anomaly.report.leaderboard import as_table, print_leaderboard

    path = bench_runs / "gpnd-3-0" / "results.json"
    data = json.loads(path.read_text())
    data["metrics"]["auroc"] = 0.3  # below chance: flagged, and still gpnd's number for class 3
    path.write_text(json.dumps(data))
    (board,) = leaderboards(report([bench_runs], echo=False, plots=False)["runs"])
    assert board.cells["gpnd"]["3"].values == pytest.approx([0.3, 0.834]) and "3" in board.complete
    assert board.ranks["gpnd"] == pytest.approx((3 * 4 + 4) / 5)  # 4th of 4 in class 3
    table = as_table(board)
    gpnd = table.rows[board.methods.index("gpnd")]
    assert gpnd[1 + board.classes.index("3")] == "0.567 ± 0.267!"
    assert table.notes[-1] == "- test AUROC below chance (0.5): gpnd 3"
    assert "| gpnd | 0.802 ± 0.002 | 0.812 ± 0.002 | 0.822 ± 0.002 | 0.567 ± 0.267! |" in \
        (bench_runs / "report" / "report.md").read_text()
    print_leaderboard(board, width=80)
    text = capsys.readouterr().out
    assert ".567!" in text and "- test AUROC below chance (0.5): gpnd 3" in text


@pytest.mark.parametrize("methods, classes", [(("arae", "ae"), 6), (("arae", "ae", "gpnd"), 4)])
def test_no_test_without_three_methods_and_five_classes(tmp_path, methods, classes):
    root = tmp_path / "runs"
    for method in methods:
        for normal in range(classes):
            bench_run(root, method, normal, 0, STRENGTH[method])
    (board,) = leaderboards(report([root], echo=False, plots=False)["runs"])
    assert board.test is None and board.ranks == {m: float(i) for i, m in enumerate(methods, 1)}
    assert significance_line(board) == ("No rank test: the Friedman test here needs at least 3 methods and 5 classes "
                                        f"with a number for every method (here {len(methods)} and {classes}).")


README = f"""# project

## Reproduction

<!-- reproduction:start -->
<!-- reproduction:end -->

## Leaderboard

{START}
stale
{END}

After.
"""


@pytest.mark.slow
def test_readme_leaderboard_section_with_its_diagram(bench_runs, tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    main([str(bench_runs), "--readme", str(path)])
    text = path.read_text()
    section = text.split(START)[1].split(END)[0]
    assert "stale" not in section and text.endswith("After.\n")
    assert "#### benchmark_mnist · budget reduced" in section and "| arae | **0.952 ± 0.002** |" in section
    assert "![critical-difference diagram of benchmark_mnist · budget reduced]" \
           "(docs/leaderboard/benchmark_mnist_budget_reduced_cd.png)" in section
    assert (tmp_path / "docs" / "leaderboard" / "benchmark_mnist_budget_reduced_cd.png").stat().st_size > 5000
    assert "Re-run: `python -m anomaly.reproduce table=benchmark_mnist budget=reduced`" in section
    # the benchmark is not also in the reproduction section
    assert "benchmark_mnist" not in text.split("<!-- reproduction:start -->")[1].split("<!-- reproduction:end -->")[0]
    # without the markers: refused in one line, nothing written
    path.write_text(README.replace(START, "").replace(END, ""))
    with pytest.raises(SystemExit):
        readme([bench_runs], path, echo=False)
    assert START not in path.read_text()
    assert json.loads((bench_runs / "arae-0-0" / "results.json").read_text())["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["benchmark_mnist", "benchmark_fashion_mnist", "benchmark_coil100"])
def test_every_method_of_a_benchmark_is_accepted_at_every_budget(tmp_path, name):
    """Each cell's run config passes the checks that refuse bad settings before any data loads
    (a two-stage method's epochs at equal_steps, …) and keeps the budget's equal batch size."""
    from anomaly.config import compose
    from anomaly.config_schema import check_train
    from anomaly.report.table_conf import table_config

    table = table_config(name)
    first = {k: v[0] for k, v in table.grid.items() if k != "variant"}
    for budget in table.budgets:
        for variant in table.variants:
            cell = Cell.of({"variant": variant, **first})
            cfg = compose(tmp_path, table.overrides(cell, budget, []))
            check_train(cfg)
            # anomaly.methods.<variant>.<Class> (ocsvm_tuned: a setting of anomaly.methods.ocsvm)
            assert variant.split("_tuned")[0] == cfg.method._target_.split(".")[2]
            if budget == "equal_steps":
                assert cfg.data.batch_size == table.budgets[budget]["data.batch_size"]
                assert cfg.trainer.max_epochs == table.budgets[budget]["trainer.max_epochs"], variant


def test_the_terminal_leaderboard_fits_the_window_with_long_class_names(bench_runs, capsys):
    from anomaly.report.leaderboard import print_leaderboard

    out = report([bench_runs], echo=False, plots=False)
    (board,) = leaderboards(out["runs"])
    names = dict(zip(board.classes, ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Ankle boot"]))
    board.classes = list(names.values())  # Fashion-MNIST's names
    board.complete = [names[c] for c in board.complete]
    board.cells = {m: {names[c]: cell for c, cell in cells.items()} for m, cells in board.cells.items()}
    print_leaderboard(board, width=60)
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 60 and "…" not in text
    assert "(continued," in text  # the classes that did not fit, in a block of their own
    for name in board.classes:  # every class whole, in one block or the next
        assert name in text
    first = text.splitlines()[1].split()
    assert first[:3] == ["method", "mean", "rank"]  # what decides the ranking comes first


# ---- fair comparison: no labels unless the row says so, the cost beside the number, datasets as blocks --
# a fixed classes × methods matrix (a tie in class 2) and a method tuned on labelled anomalies above all
FIXED = {"ae": [0.90, 0.85, 0.80, 0.95, 0.70, 0.88], "arae": [0.85, 0.80, 0.80, 0.90, 0.75, 0.86],
         "gpnd": [0.70, 0.90, 0.60, 0.85, 0.65, 0.80], "vae": [0.60, 0.70, 0.65, 0.70, 0.60, 0.75]}
TUNED = "γ = 0.01 chosen from ['scale', 0.1, 0.01] by validation AUROC, on 449 labelled anomalies"


def fixed_runs(root: Path, budget: str = "reduced", table: str = "benchmark_mnist", shift: float = 0.0) -> Path:
    for method, values in FIXED.items():
        for normal, auroc in enumerate(values):
            flops = {"ae": 1e12, "arae": 4e13, "gpnd": 4e13, "vae": 2e13}[method]
            cost = {"training_flops": flops, "schedule_share": 0.25 if method != "ae" else 1.0, "budget_flops": 4e13}
            bench_run(root, method, normal, 0, auroc + shift, budget, table, cost=cost, labelled_selection=None)
    for normal in range(len(FIXED["ae"])):
        bench_run(root, "ocsvm_tuned", normal, 0, 0.99, budget, table, labelled_selection=TUNED,
                  cost={"training_flops": 2e9, "schedule_share": 1.0})
    return root


def test_rank_statistics_are_autoranks_and_leave_out_the_method_tuned_on_labels(tmp_path):
    """Our average ranks, Friedman p and Nemenyi CD on a fixed matrix are what autorank gives for the
    methods that chose nothing with labels; the tuned one is shown apart, last, marked, unranked."""
    import pandas as pd
    from autorank import autorank
    from scipy.stats import friedmanchisquare

    from anomaly.report.leaderboard import as_table

    (board,) = leaderboards(report([fixed_runs(tmp_path / "runs")], echo=False, plots=False)["runs"])
    frame = pd.DataFrame(FIXED)
    reference = autorank(frame, alpha=0.05, verbose=False, order="descending", force_mode="nonparametric")
    assert board.ranks == pytest.approx(reference.rankdf["meanrank"].to_dict())
    # by hand: class 2's tie shares rank 1.5
    assert board.ranks == pytest.approx({"ae": 8.5 / 6, "arae": 11.5 / 6, "gpnd": 17 / 6, "vae": 23 / 6})
    assert board.test.cd == pytest.approx(reference.cd) and board.test.pvalue == pytest.approx(reference.pvalue)
    assert board.test.statistic == pytest.approx(friedmanchisquare(*frame.to_numpy().T).statistic)
    assert board.ranked == ["ae", "arae", "gpnd", "vae"] and set(board.ranked) == set(reference.rankdf.index)
    assert board.methods[-1] == "ocsvm_tuned"
    assert board.tuned == {"ocsvm_tuned": TUNED}
    table = as_table(board)
    tuned_row = table.rows[-1]
    assert tuned_row[0] == "ocsvm_tuned †" and tuned_row[len(board.classes) + 2] == "—"  # no rank
    assert not any("**" in cell for cell in tuned_row)  # its 0.99s are not the best of a class
    notes = "\n".join(table.notes)
    assert "Friedman test over 6 classes × 4 methods" in notes and "Not in the test: ocsvm_tuned (†)" in notes
    assert f"† tuned on labelled anomalies (ocsvm_tuned: {TUNED}): shown apart, not ranked" in notes


def test_the_leaderboard_shows_each_methods_flops_and_share_and_draws_them(tmp_path):
    from anomaly.report.leaderboard import as_table
    from anomaly.report.leaderboard_figures import plot_cost

    (board,) = leaderboards(report([fixed_runs(tmp_path / "runs")], echo=False, plots=False)["runs"])
    table = as_table(board)
    assert table.header[-2:] == ["train FLOPs", "share"]
    by_method = {row[0]: row for row in table.rows}
    assert by_method["gpnd"][-2:] == ["4.0e13", "25 %"] and by_method["ae"][-2:] == ["1.0e12", "100 %"]
    assert by_method["ocsvm_tuned †"][-2] == "2.0e9"
    assert any(n.startswith("train FLOPs: training FLOPs of a run") and "the same 4.0e13 training FLOPs" in n
               for n in table.notes)
    figure = plot_cost(board, tmp_path)
    assert figure.name == "benchmark_mnist_budget_reduced_flops.png" and figure.stat().st_size > 5000


def test_datasets_as_blocks_two_are_too_few_to_decide(tmp_path):
    """Two benchmarks at one budget: each method's mean per dataset, its average rank over the
    datasets, and no p-value: with 2 blocks the signed-rank test's smallest two-sided p is 0.5."""
    from anomaly.report.across import across_boards, as_table, verdict

    root = tmp_path / "runs"
    fixed_runs(root / "mnist")
    fixed_runs(root / "fashion", table="benchmark_fashion_mnist", shift=-0.05)
    boards = leaderboards(report([root], echo=False, plots=False)["runs"])
    (result,) = across_boards(boards)
    assert result.datasets == ["benchmark_fashion_mnist", "benchmark_mnist"] or \
        result.datasets == ["benchmark_mnist", "benchmark_fashion_mnist"]
    assert result.methods == ["ae", "arae", "gpnd", "vae"] and result.left_out == ["ocsvm_tuned"]
    assert result.means["ae"]["benchmark_mnist"] == pytest.approx(sum(FIXED["ae"]) / 6)
    assert result.means["ae"]["benchmark_fashion_mnist"] == pytest.approx(sum(FIXED["ae"]) / 6 - 0.05)
    assert result.ranks == {"ae": 1.0, "arae": 2.0, "gpnd": 3.0, "vae": 4.0}
    assert result.smallest_p == 0.5 and not result.decidable and result.datasets_needed() == 8
    text = verdict(result)
    assert text.startswith("Too few datasets to decide: with 2 datasets as the blocks, the smallest two-sided "
                           "p-value a signed-rank test can reach is 2/2^2 = 0.5, and Holm over the 6 pairs")
    assert "p =" not in text and "at least 8 datasets" in text
    assert "Left out (tuned on labelled anomalies, or without a mean on every dataset): ocsvm_tuned." in \
        as_table(result).notes
    # the README's section says it under the leaderboards
    path = tmp_path / "README.md"
    path.write_text(README)
    main([str(root), "--readme", str(path)])
    section = path.read_text().split(START)[1].split(END)[0]
    assert "#### Across datasets · budget reduced" in section and "Too few datasets to decide" in section
    assert "benchmark_mnist_budget_reduced_flops.png" in section


def test_datasets_as_blocks_signed_rank_with_holm_on_a_fixed_input():
    """Seven datasets: a beats c on every one (exact two-sided p = 2/2⁷), b and c trade places;
    Holm over the three pairs, checked against scipy's exact test."""
    from scipy.stats import wilcoxon

    from anomaly.report.across import compare, holm, verdict

    datasets = [f"d{i}" for i in range(7)]
    a = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96]
    b = [0.853, 0.861, 0.872, 0.905, 0.845, 0.958, 0.881]
    c = [0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92]
    means = {m: dict(zip(datasets, v)) for m, v in (("a", a), ("b", b), ("c", c))}
    result = compare(means, datasets)
    assert result.decidable and result.smallest_p == 2 / 2 ** 7
    raw = {(p.a, p.b): p.pvalue for p in result.pairs}
    for (x, y), p in raw.items():
        diff = [u - v for u, v in zip(means[x].values(), means[y].values())]
        assert p == pytest.approx(wilcoxon(diff, method="exact").pvalue)
    assert raw[("a", "c")] == pytest.approx(2 / 2 ** 7)
    adjusted = {(p.a, p.b): p.holm for p in result.pairs}
    assert list(adjusted.values()) == pytest.approx(holm(list(raw.values())))
    assert adjusted[("a", "c")] == pytest.approx(3 * 2 / 2 ** 7)  # the smallest p, times the 3 pairs
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert "significant at α = 0.05: a above c (p = 0.047)" in verdict(result)


def test_the_readme_leads_with_equal_compute_and_says_what_each_budget_and_its_data_are(tmp_path):
    """budget=compute's leaderboards come first, under a heading that says they are the comparison;
    budget=reduced's follow under one that says they are not. Each board says what its runs
    trained and were tested on, from their recorded split sizes, and that every method of a class
    had the same images only where their fingerprints agree."""
    from anomaly.report.leaderboard import readme_section

    root = tmp_path / "reproduced"
    for budget in ("reduced", "compute"):
        for method, base in STRENGTH.items():
            for normal in range(5):
                sizes = {"train": 900 + 10 * normal, "val": 501, "val_anomalies": 450, "test": 1000,
                         "test_anomalies": 890 + normal, "train_anomalies": 0}
                prints = {"train": f"t{normal}", "val": f"v{normal}",
                          "test": "other" if (budget, method, normal) == ("reduced", "vae", 2) else f"x{normal}"}
                bench_run(root / budget, method, normal, 0, base + 0.01 * normal, budget=budget, split_sizes=sizes,
                          data_fingerprint=prints, dataset_size={"train": 10000, "test": 10000,
                                                                 "official": {"train": 60000, "test": 10000}})
    boards = leaderboards(report([root], echo=False, plots=False)["runs"])
    assert [b.budget for b in boards] == ["compute", "reduced"]
    section = readme_section(boards, "cmd", tmp_path / "figures", tmp_path)
    compute = section.index("### budget=compute: equal training compute, the comparison")
    reduced = section.index("### budget=reduced: a first look, not a comparison")
    assert compute < section.index("#### benchmark_mnist · budget compute") < reduced \
        < section.index("#### benchmark_mnist · budget reduced")
    same = ("Each run trained on 900–940 images of its class, validated on 501 (450 of them anomalies) and tested "
            "on 1,000 (890–894 anomalies) of the 10,000 test images; every method of a class on the same images "
            "(their recorded fingerprints). This copy of the dataset: 10,000 of the official 60,000 training images.")
    compute_part, reduced_part = section[compute:reduced], section[reduced:]
    assert same in compute_part
    # one method tested on other images for one class: the claim is not made
    assert "of the 10,000 test images. This copy" in reduced_part and "on the same images" not in reduced_part


def test_a_methods_epochs_are_a_span_where_a_compute_budget_stopped_its_runs_apart():
    from types import SimpleNamespace

    from anomaly.report.leaderboard import schedule_span

    def runs(*schedules):
        return [SimpleNamespace(schedule=s) for s in schedules]

    assert schedule_span(runs("3/80 ep", "3/80 ep")) == "3/80 ep"
    assert schedule_span(runs("47/1600 ep", "61/1600 ep", "52/1600 ep")) == "47–61/1600 ep"
    assert schedule_span(runs("89 ep", "100 ep")) == "89–100 ep"
    assert schedule_span(runs("3/80 ep", "4/60 ep")) == "mixed"  # against two schedules
    assert schedule_span(runs(None, None)) == "?"


def test_labels_of_points_at_about_the_same_flops_and_metric_do_not_overlap():
    from anomaly.report.leaderboard_figures import label_heights

    points = [("adae", 5.0e12, 0.679), ("gpnd", 4.9e12, 0.671), ("fanogan", 4.9e12, 0.599),
              ("ocsvm", 1.9e9, 0.675), ("geom", 5.0e12, 0.957)]
    at = label_heights(points, gap=0.05)
    step = 0.05 * (0.957 - 0.599)
    assert at["adae"] == 0.679 and at["gpnd"] == pytest.approx(0.679 - step)  # moved below adae's
    assert at["fanogan"] == 0.599 and at["geom"] == 0.957  # far enough already
    assert at["ocsvm"] == 0.675  # as close in the metric, but a thousandfold fewer FLOPs

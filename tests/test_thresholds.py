"""Threshold rules (anomaly.evaluation.thresholds), the `threshold` config group and each
protocol's paper threshold."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from hydra.errors import MissingConfigException
from sklearn.metrics import f1_score

from anomaly import AnomalyError
from anomaly.evaluation.thresholds import ContaminationQuantile, F1Threshold, QuantileThreshold, Threshold
from anomaly.pipeline import build_threshold, train
from anomaly.rescore import evaluate
from tests.conftest import CONF_DIR, TINY, compose_config

POSITIVES = {"f1": "anomalous", "f1_inlier": "normal"}


def f1_at(scores: np.ndarray, anomalous: np.ndarray, tau: float, positive: str) -> float:
    """F1 of `score > τ` (0 where it is undefined), with anomalies or normals positive: 2·TP / (P + P̂),
    counted directly (sklearn's f1_score gives the same, 100× slower for thousands of cuts)."""
    flagged = scores > tau
    truth, said = (anomalous, flagged) if positive == "anomalous" else (~anomalous, ~flagged)
    both = int(truth.sum() + said.sum())
    return 2 * int((truth & said).sum()) / both if both else 0.0


def test_the_counted_f1_is_sklearns():
    for scores, anomalous in random_sets(n_sets=20):
        for tau in [float(scores.min()) - 1, *np.unique(scores).tolist()]:
            assert f1_at(scores, anomalous, tau, "anomalous") == \
                pytest.approx(f1_score(anomalous, scores > tau, zero_division=0), abs=1e-12)
            assert f1_at(scores, anomalous, tau, "normal") == \
                pytest.approx(f1_score(~anomalous, scores <= tau, zero_division=0), abs=1e-12)


def random_sets(n_sets=200, seed=0):
    """Score sets with many ties (integers 0…9) and both classes, of 2 to 40 scores."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_sets:
        n = int(rng.integers(2, 41))
        anomalous = rng.random(n) < rng.uniform(0.05, 0.9)
        if not 0 < anomalous.sum() < n:
            continue
        scores = rng.integers(0, 10, size=n) + 3 * anomalous * rng.random()  # some separation
        out.append((np.floor(scores).astype(float), anomalous))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["f1", "f1_inlier"])
def test_f1_threshold_is_the_best_of_every_cut_with_ties(name):
    """Brute force over every cut (each distinct score as τ, flag nothing and flag everything)."""
    positive = POSITIVES[name]
    ends = 0
    for scores, anomalous in random_sets():
        cuts = [float(scores.min()) - 1, *np.unique(scores).tolist()]  # the last: flag nothing
        values = [f1_at(scores, anomalous, c, positive) for c in cuts]
        best = max(values)
        rule = F1Threshold(positive=positive)
        tau = rule.fit(torch.from_numpy(scores), torch.from_numpy(anomalous))
        assert f1_at(scores, anomalous, tau, positive) == pytest.approx(best, abs=1e-12), (scores, anomalous)
        assert tau not in set(scores.tolist())  # strictly between scores: ties are never split
        assert (rule.used, rule.reason) == (name, None)
        ends += best > max(values[1:-1], default=-1)  # only an end reaches the best
    assert ends > 0  # the search's ends were needed on some of these sets


def test_flag_nothing_can_win_with_normals_positive():
    # the old search never flagged nothing: here every cut flags a normal, and accepting
    # everything has the best inlier F1 (2·4 / (5 + 4) = 0.889; flagging 5 alone: 2·3 / (4 + 4) = 0.75)
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    anomalous = torch.tensor([False, False, True, False, False])
    tau = F1Threshold(positive="normal").fit(scores, anomalous)
    assert tau > 5.0 and tau == pytest.approx(5.0, abs=1e-4)
    # with anomalies positive the best cut flags 3…5
    assert F1Threshold().fit(scores, anomalous) == pytest.approx(2.5)


def test_flag_everything_and_the_midpoint():
    scores = torch.tensor([1.0, 1.0, 2.0, 4.0])
    assert F1Threshold().fit(scores, torch.ones(4, dtype=torch.bool)) < 1.0  # validation all anomalous
    assert F1Threshold().fit(scores, torch.tensor([False, False, True, True])) == pytest.approx(1.5)
    assert F1Threshold(positive="normal").fit(scores, torch.tensor([False, False, False, True])) == pytest.approx(3.0)


def test_f1_falls_back_to_the_normals_quantile_and_says_so_once(caplog):
    scores = torch.arange(101, dtype=torch.float64)
    rule = F1Threshold(positive="normal", fallback_quantile=0.9)
    with caplog.at_level(logging.WARNING, logger="anomaly"):
        assert rule.fit(scores, torch.zeros(101, dtype=torch.bool)) == pytest.approx(90.0)
        rule.fit(scores, torch.zeros(101, dtype=torch.bool))  # the next epoch: no second line
    assert (rule.used, rule.reason) == ("quantile", "validation has no anomalies")
    assert rule.record() == {"configured": "f1_inlier", "used": "quantile", "reason": "validation has no anomalies"}
    lines = [r.getMessage() for r in caplog.records if "no anomalies" in r.getMessage()]
    assert lines == ["threshold=f1_inlier: validation has no anomalies; used quantile"]
    # with anomalies again the record says so
    anomalous = scores > 95
    rule.fit(scores, anomalous)
    assert (rule.used, rule.reason) == ("f1_inlier", None)


def test_quantile_threshold_and_unfittable_scores():
    scores = torch.arange(101, dtype=torch.float64)
    anomalous = scores > 90  # the quantile ignores the anomalies
    assert QuantileThreshold(0.5).fit(scores, anomalous) == pytest.approx(45.0)
    rule = QuantileThreshold()
    assert math.isnan(rule.fit(torch.tensor([1.0, math.nan]), torch.zeros(2, dtype=torch.bool)))
    assert rule.record() == {"configured": "quantile", "used": None, "reason": "validation scores are not finite"}
    assert math.isnan(F1Threshold().fit(torch.tensor([1.0, math.inf]), torch.tensor([False, True])))


@pytest.mark.parametrize("make, message", [
    (lambda: QuantileThreshold(1.5), r"threshold.quantile=1.5 must be in \(0, 1\)"),
    (lambda: QuantileThreshold("high"), r"threshold.quantile='high' must be a number in \(0, 1\)"),
    (lambda: F1Threshold(fallback_quantile=0), r"threshold.fallback_quantile=0 must be in \(0, 1\)"),
    (lambda: F1Threshold(positive="inlier"), r"threshold.positive='inlier' must be one of \('anomalous', 'normal'\)"),
    (lambda: ContaminationQuantile(None), "threshold=contamination_quantile needs threshold.contamination"),
    (lambda: ContaminationQuantile(1.0), r"threshold.contamination=1.0 must be in \(0, 1\)"),
])
def test_bad_settings_fail_when_built(make, message):
    with pytest.raises(AnomalyError, match=message):
        make()


# ---- the config group -------------------------------------------------------------------------
def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.slow
def test_every_threshold_option_builds_its_rule(tmp_path):
    assert options("threshold") == ["contamination_quantile", "f1", "f1_inlier", "quantile"]
    for name in options("threshold"):
        extra = ["threshold.contamination=0.1"] if name == "contamination_quantile" else []
        rule = build_threshold(compose_config(tmp_path, [f"threshold={name}", *extra]))
        assert isinstance(rule, Threshold) and rule.name == name


PAPER_THRESHOLDS = {  # protocol → the threshold its paper used
    "gpnd_folds": "f1_inlier", "anomaly_ratio": "f1_inlier", "coil_random": "f1_inlier",
    "contamination": "contamination_quantile", "one_class": "f1", "holdout_class": "f1",
}


@pytest.mark.slow
def test_each_protocol_composes_to_its_papers_threshold_and_the_command_line_wins(tmp_path):
    assert sorted(PAPER_THRESHOLDS) == options("protocol")
    assert build_threshold(compose_config(tmp_path)).name == "f1"  # the default run
    for protocol, name in PAPER_THRESHOLDS.items():
        assert build_threshold(compose_config(tmp_path, [f"protocol={protocol}"])).name == name, protocol
        for override in ("f1", "quantile"):  # before or after the protocol on the command line
            for order in ([f"threshold={override}", f"protocol={protocol}"],
                          [f"protocol={protocol}", f"threshold={override}"]):
                assert build_threshold(compose_config(tmp_path, order)).name == override, order
    # a dataset that picks its protocol (COIL-100 → coil_random) gets that protocol's threshold
    assert build_threshold(compose_config(tmp_path, ["dataset=coil100"])).name == "f1_inlier"
    assert build_threshold(compose_config(tmp_path, ["dataset=coil100", "threshold=f1"])).name == "f1"
    rule = build_threshold(compose_config(tmp_path, ["protocol=contamination", "protocol.contamination=0.2"]))
    assert rule.contamination == 0.2


@pytest.mark.slow
def test_bad_threshold_settings_fail_before_any_data_or_training(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the threshold settings were checked")

    monkeypatch.setattr("anomaly.pipeline.build_datamodule", no_data)
    with pytest.raises(AnomalyError, match=r"threshold.quantile=1.5 must be in \(0, 1\)"):
        train(compose_config(tmp_path, [*TINY, "threshold=quantile", "threshold.quantile=1.5"]))
    with pytest.raises(AnomalyError, match="threshold=contamination_quantile needs threshold.contamination"):
        train(compose_config(tmp_path, [*TINY, "threshold=contamination_quantile"]))
    with pytest.raises(MissingConfigException, match="threshold/youden"):  # no such option
        compose_config(tmp_path, ["threshold=youden"])
    with pytest.raises(Exception, match="Nope"):
        train(compose_config(tmp_path, [*TINY, "threshold._target_=anomaly.evaluation.thresholds.Nope"]))
    with pytest.raises(Exception, match="threshold.strategy"):  # the old setting is gone
        compose_config(tmp_path, ["threshold.strategy=f1_inlier"])


# ---- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_fallback_is_recorded_in_results_and_survives_evaluate(tmp_path):
    # validation without anomalies: the f1 threshold falls back to the normals' 0.95 quantile
    # (the whole test split in debug=fast's two batches: evaluate re-scores all of it)
    run = train(compose_config(tmp_path / "run", [*TINY, "debug=fast", "protocol.val_anomalies=false",
                                                  "data.eval_batch_size=512"]))
    fallback = {"configured": "f1", "used": "quantile", "reason": "validation has no anomalies"}
    assert run["threshold_fit"] == fallback and run["threshold_strategy"] == "quantile"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["threshold_fit"] == fallback
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = compose_config(tmp_path / "eval", [f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false"],
                           config_name="evaluate")
    again = evaluate(saved)  # the saved threshold and its record
    assert again["threshold_fit"] == fallback and again["metrics"]["threshold"] == run["metrics"]["threshold"]
    refit = compose_config(tmp_path / "refit", [f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false",
                                                "refit_threshold=true"], config_name="evaluate")
    again = evaluate(refit)  # the rule rebuilt from the run's config, fitted again
    assert again["threshold_fit"] == fallback
    assert again["metrics"]["threshold"] == pytest.approx(run["metrics"]["threshold"], abs=1e-6)
    # a checkpoint from before the threshold group: its saved threshold still evaluates; a refit
    # needs a rule and says how to choose one
    old = torch.load(ckpt, weights_only=True)
    old["anomaly"]["config"]["threshold"] = {"strategy": "auto", "quantile": 0.95, "contamination": None}
    del old["anomaly"]["threshold_fit"]
    torch.save(old, tmp_path / "old.ckpt")
    again = evaluate(compose_config(tmp_path / "old", [f"ckpt_path={tmp_path / 'old.ckpt'}",
                                                       "trainer.enable_progress_bar=false"], config_name="evaluate"))
    assert again["threshold_fit"] == {"configured": "auto", "used": None, "reason": None}
    assert again["metrics"] == pytest.approx(run["metrics"], abs=1e-6)
    with pytest.raises(AnomalyError, match=r"threshold.strategy=auto is gone\): choose one with threshold=<name>"):
        evaluate(compose_config(tmp_path / "old_refit", [f"ckpt_path={tmp_path / 'old.ckpt'}",
                                                         "refit_threshold=true"], config_name="evaluate"))

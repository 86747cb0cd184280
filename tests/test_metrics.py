import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from anomaly.evaluation.metrics import METRIC_KEYS, compute_metrics, detection_error, score_problem


def scores_and_labels(n=400, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    anomalous = rng.random(n) < 0.3
    scores = rng.normal(size=n) + shift * anomalous
    return torch.from_numpy(scores), torch.from_numpy(anomalous)


def test_ranking_metrics_match_sklearn():
    s, a = scores_and_labels()
    m = compute_metrics(s, a, threshold=0.5)
    assert m["auroc"] == pytest.approx(roc_auc_score(a, s), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(average_precision_score(a, s), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(average_precision_score(~a.numpy(), -s.numpy()), abs=1e-6)
    pred = (s > 0.5).numpy()
    assert m["f1"] == pytest.approx(f1_score(a, pred), abs=1e-6)
    assert m["f1_inlier"] == pytest.approx(f1_score(~a.numpy(), ~pred), abs=1e-6)


def test_large_scores_are_not_squashed():
    # log-density scores in the thousands would all become 1.0 through a sigmoid
    s, a = scores_and_labels()
    shifted = compute_metrics(s * 1e-3 + 5e3, a, math.nan)
    assert shifted["auroc"] == pytest.approx(roc_auc_score(a, s), abs=1e-6)
    assert math.isnan(shifted["f1"])


def test_fpr95_counts_anomalies_accepted_at_95_percent_normals():
    normal = torch.arange(100, dtype=torch.float64)            # scores 0…99
    anomalies = torch.tensor([50.0, 95.0, 200.0, 300.0])       # two below the 95th normal
    s = torch.cat([normal, anomalies])
    a = torch.cat([torch.zeros(100, dtype=torch.bool), torch.ones(4, dtype=torch.bool)])
    assert compute_metrics(s, a, math.nan)["fpr95"] == pytest.approx(0.25)  # only 50 accepted at ≤94


def test_detection_error_by_hand():
    # scores 1…6, anomalous at 2, 5, 6 (3 normals, 3 anomalies). Cuts (flag the k highest):
    # k=0: ½(0 + 1) = .5; k=1 {6}: ½(0 + ⅔); k=2 {6,5}: ½(0 + ⅓) = 1/6; k=3 {…,4}: ½(⅓ + ⅓);
    # k=4 {…,3}: ½(⅔ + ⅓); k=5 {…,2}: ½(⅔ + 0) = ⅓; k=6: ½(1 + 0)
    s = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    a = torch.tensor([False, True, False, False, True, True])
    assert detection_error(s, a) == pytest.approx(1 / 6)
    assert compute_metrics(s, a, math.nan)["detection_error"] == pytest.approx(1 / 6)
    # a tie may not be split: with 4 and 5 tied the best cut {6} gives ½(0 + ⅔) = ⅓, {6,5,4} ½(⅓ + ⅓)
    tied = torch.tensor([1.0, 2.0, 3.0, 4.5, 4.5, 6.0])
    assert detection_error(tied, a) == pytest.approx(1 / 3)
    # either class positive: the same; perfect separation: 0; one class only: NaN
    assert detection_error(-s, ~a) == pytest.approx(1 / 6)
    assert detection_error(a.double(), a) == 0.0
    assert math.isnan(detection_error(s, torch.zeros(6, dtype=torch.bool)))
    assert "detection_error" in METRIC_KEYS


def test_detection_error_is_the_minimum_over_every_threshold():
    rng = np.random.default_rng(1)
    for _ in range(50):
        s = torch.from_numpy(rng.integers(0, 8, size=30).astype(float))
        a = torch.from_numpy(rng.random(30) < 0.4)
        if not 0 < int(a.sum()) < 30:
            continue
        n_anom, n_norm = int(a.sum()), int((~a).sum())
        errors = [0.5 * (int((s[~a] > t).sum()) / n_norm + int((s[a] <= t).sum()) / n_anom)
                  for t in [float(s.min()) - 1, *torch.unique(s).tolist()]]
        assert detection_error(s, a) == pytest.approx(min(errors), abs=1e-12)


def test_score_problems_are_named():
    assert score_problem(torch.tensor([1.0, 2.0])) is None
    assert "not finite" in score_problem(torch.tensor([1.0, float("nan")]))
    assert "all 3 scores are equal" in score_problem(torch.ones(3))


def test_nonsense_warnings_name_an_inverted_ranking_and_unusable_scores():
    from anomaly.evaluation.metrics import nonsense_warnings

    normal, anomalous = torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0, 2.0])
    scores = torch.cat([normal, anomalous])
    labels = torch.tensor([False] * 3 + [True] * 3)
    inverted = compute_metrics(scores, labels, 2.5)
    (line,) = nonsense_warnings(inverted, score_problem(scores))
    assert "validation AUROC 0.000 is below chance" in line and "ranks anomalies below normals" in line
    assert nonsense_warnings(compute_metrics(-scores, labels, -2.5), None) == []
    constant = torch.ones(6)
    (line,) = nonsense_warnings({}, score_problem(constant), split="test")
    assert line.startswith("test scores: all 6 scores are equal")


def test_a_method_warns_when_its_validation_ranks_anomalies_below_normals(caplog):
    from anomaly.methods.ae import Autoencoder
    from anomaly.evaluation.gather import ScoredSplit

    model = Autoencoder(image_shape=(1, 16, 16))
    labels = torch.tensor([False] * 3 + [True] * 3)
    inverted = ScoredSplit(score=torch.tensor([3.0, 4.0, 5.0, 0.0, 1.0, 2.0]), anomalous=labels,
                           label=labels.long(), index=torch.arange(6))
    def validate(split):  # as the module's validation does with a gathered split
        model.evaluator.validation(split, model.post_processor.fit(split))
        model.evaluator.warn_if_nonsense(model.name)

    with caplog.at_level("WARNING", logger="anomaly"):
        validate(inverted)
    assert model.evaluator.val_metrics["auroc"] == 0.0
    assert "method=ae: validation AUROC 0.000 is below chance" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="anomaly"):
        validate(ScoredSplit(-inverted.score, labels, labels.long(), torch.arange(6)))
    assert model.evaluator.val_metrics["auroc"] == 1.0 and caplog.text == ""


# ---- suspect numbers: flagged, never hidden (anomaly.evaluation.suspect) -------------------------
@pytest.mark.parametrize("metrics, val_metrics, scores, expected", [
    ({"auroc": 0.248}, None, None, ["auroc_below_chance"]),
    ({"auroc": 0.5}, None, None, ["auroc_at_chance"]),
    ({"auroc": 0.9}, {"auroc": 0.6}, None, ["val_test_gap"]),
    ({"auroc": 0.3}, {"auroc": 0.95}, None, ["auroc_below_chance", "val_test_gap"]),
    ({}, {}, np.full(5, 0.25), ["scores_constant"]),
    ({}, {}, np.array([0.1, np.nan, np.inf]), ["scores_not_finite"]),
    # clean: above chance, a gap of 0.2 at most, varied scores; a record without numbers
    ({"auroc": 0.91}, {"auroc": 0.72}, np.array([0.1, 0.2, 0.3]), []),
    ({"auroc": None}, None, None, []),
    (None, None, None, []),
])
def test_suspect_flags_name_each_number_that_cannot_be_right(metrics, val_metrics, scores, expected):
    from anomaly.evaluation.suspect import FLAG_TITLES, suspect_flags

    flags = suspect_flags(metrics, val_metrics, scores)
    assert [f["id"] for f in flags] == expected
    assert all(f["id"] in FLAG_TITLES and f["reason"] and "\n" not in f["reason"] for f in flags)


def test_suspect_reasons_give_the_numbers():
    from anomaly.evaluation.suspect import suspect_flags

    (below, gap) = suspect_flags({"auroc": 0.248}, {"auroc": 0.9}, torch.tensor([0.0, 1.0]))
    assert "0.248" in below["reason"] and "below chance" in below["reason"]
    assert "0.900" in gap["reason"] and "0.248" in gap["reason"]
    (equal,) = suspect_flags({}, None, torch.zeros(4))
    assert equal["reason"] == "all 4 test scores are equal (0)"

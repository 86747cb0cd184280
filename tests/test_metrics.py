import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from anomaly.metrics import compute_metrics, fit_threshold, score_problem


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


@pytest.mark.parametrize("strategy", ["f1", "f1_inlier"])
def test_f1_threshold_is_the_best_cut(strategy):
    s, a = scores_and_labels(n=300, seed=3, shift=1.5)
    t = fit_threshold(s, a, strategy)
    candidates = np.unique(s.numpy())
    key = "f1" if strategy == "f1" else "f1_inlier"
    best = max(compute_metrics(s, a, c)[key] for c in candidates)
    assert compute_metrics(s, a, t)[key] == pytest.approx(best, abs=1e-6)
    assert t not in set(candidates.tolist())  # a midpoint: no score sits on the threshold


def test_quantile_threshold_without_validation_anomalies():
    s = torch.arange(101, dtype=torch.float64)
    assert fit_threshold(s, torch.zeros(101, dtype=torch.bool)) == pytest.approx(95.0)
    assert fit_threshold(s, torch.zeros(101, dtype=torch.bool), "quantile", 0.5) == pytest.approx(50.0)


def test_score_problems_are_named():
    assert score_problem(torch.tensor([1.0, 2.0])) is None
    assert "not finite" in score_problem(torch.tensor([1.0, float("nan")]))
    assert "all 3 scores are equal" in score_problem(torch.ones(3))

"""Numbers that cannot be right, flagged beside them (never hidden): a test AUROC below chance or
exactly at it, test scores that are constant or not finite, a validation AUROC far from the test
one. A run so flagged keeps its status (`ok`) and its numbers; results.json records the flags
under `suspect` and the report marks the cells they go into.

A flag is {"id": a short machine name, "reason": one line for a person}. The checks read a run's
record alone where no scores are at hand (results kept without scores.npz), the scores too where
they are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

VAL_TEST_GAP = 0.2  # |validation AUROC − test AUROC| beyond which the two are not the same model's numbers
# what each flag says, as a table's legend groups the cells it marks
FLAG_TITLES = {
    "auroc_below_chance": "test AUROC below chance (0.5)",
    "auroc_at_chance": "test AUROC exactly 0.5",
    "scores_not_finite": "test scores not finite",
    "scores_constant": "test scores all equal",
    "val_test_gap": f"validation and test AUROC more than {VAL_TEST_GAP} apart",
    # set by the report on kept results (anomaly.report.stale), not by a run
    "stale": "stale: the cell's command now makes another run config (reproduce --status)",
}


def suspect_flags(metrics: dict[str, Any] | None, val_metrics: dict[str, Any] | None = None,
                  scores: Any = None) -> list[dict[str, str]]:
    """The flags of one run: from its test `metrics` and `val_metrics` (results.json's), and its
    test `scores` (an array; None where not kept). [] for a run with nothing suspect."""
    flags = []
    if scores is not None:
        flags += _score_flags(np.asarray(scores, dtype=np.float64).reshape(-1))
    auroc = _finite((metrics or {}).get("auroc"))
    if auroc is not None and auroc < 0.5:
        flags.append(_flag("auroc_below_chance", f"test AUROC {auroc:.3f} is below chance (0.5): the score "
                                                 "ranks anomalies below normals (an inverted score or a failed training)"))
    elif auroc == 0.5:
        flags.append(_flag("auroc_at_chance", "test AUROC is exactly 0.5: the scores rank nothing "
                                              "(tied or collapsed scores)"))
    val_auroc = _finite((val_metrics or {}).get("auroc"))
    # rounded: 0.9 − 0.7 is 0.20000000000000007 in floats, a gap of 0.2, not over it
    if auroc is not None and val_auroc is not None and round(abs(val_auroc - auroc), 9) > VAL_TEST_GAP:
        flags.append(_flag("val_test_gap", f"validation AUROC {val_auroc:.3f} vs test {auroc:.3f}: a gap over "
                                           f"{VAL_TEST_GAP} (one split does not stand for the other)"))
    return flags


def _score_flags(scores: np.ndarray) -> list[dict[str, str]]:
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        return [_flag("scores_not_finite", f"{bad} of {len(scores)} test scores are not finite")]
    if len(scores) and np.all(scores == scores[0]):
        return [_flag("scores_constant", f"all {len(scores)} test scores are equal ({scores[0]:g})")]
    return []


def _flag(flag_id: str, reason: str) -> dict[str, str]:
    return {"id": flag_id, "reason": reason}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def recorded_flags(data: dict[str, Any]) -> list[dict[str, str]]:
    """A results.json's flags: as it recorded them, or, for a file written before the field
    existed, from its numbers (its scores are not read: kept results have none)."""
    if isinstance(data.get("suspect"), list):
        return [f for f in data["suspect"] if isinstance(f, dict) and f.get("id")]
    return suspect_flags(data.get("metrics"), data.get("val_metrics"))

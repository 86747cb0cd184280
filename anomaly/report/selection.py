"""Which runs the report's tables count: ok runs only, each run config once.

A failed, interrupted or invalid run has no number to show, and the classes it records are the
ones it was asked for (a class the dataset does not have, a misspelt name): in a table they would
be columns of their own. Such runs are listed apart, after the tables. A run config re-run or
re-scored (the same config hash and training set) is one model: its newest result counts, the
others are folded. Different seeds, folds and draws are different runs (their configs differ).
"""

from __future__ import annotations

from typing import Sequence

from anomaly.report.load import Run

SHOWN = 4  # not-ok runs listed by name; the others are counted (runs.csv has every one)


def split_ok(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """(the ok runs, the others), each in the given order."""
    return [r for r in runs if r.ok], [r for r in runs if not r.ok]


def repeat_key(run: Run) -> tuple | None:
    """What a re-run or re-score of the same run shares (None: a file without a config hash,
    never folded). The classes, repetition, flags and budget are in the config hash already;
    they are compared too, so that a file that records them apart is never folded away."""
    if not run.config_hash:
        return None
    return (run.config_hash, run.train_hash, run.column, tuple(sorted(run.repetition.items(), key=str)),
            run.flags, run.budget)


def one_per_config(runs: Sequence[Run]) -> tuple[list[Run], int]:
    """The runs with each run config once (its newest by `created`), in the given order, and how
    many repeats were folded."""
    newest: dict[tuple, Run] = {}
    for run in runs:
        key = repeat_key(run)
        if key is not None and (key not in newest or (run.created or "") > (newest[key].created or "")):
            newest[key] = run
    kept = [r for r in runs if (key := repeat_key(r)) is None or newest[key] is r]
    return kept, len(runs) - len(kept)


def not_ok_lines(runs: Sequence[Run], shown: int = SHOWN) -> list[str]:
    """One line per run that is not ok (its dir, status and the first line of its error), the
    first `shown` of them, then how many more."""
    lines = [f"{run.path} · {run.status} · {first_line(run.problem)}" for run in runs[:shown]]
    if len(runs) > shown:
        lines.append(f"… and {len(runs) - shown} more (runs.csv lists every run)")
    return lines


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:160] if lines else "(no error recorded)"

"""Suspect numbers in the report's tables: a cell with a flagged run (`Run.suspect`, see
`anomaly.evaluation.suspect`) keeps its number, counted as any other, and gets a mark; a legend
under the table names the flagged cells, grouped by what is wrong with them."""

from __future__ import annotations

from typing import Iterable, Sequence

from anomaly.evaluation.suspect import FLAG_TITLES
from anomaly.report.load import Run

MARK = "!"


def marked(text: str, flagged: Sequence[Run]) -> str:
    """A cell's text with the mark where any of its runs is flagged."""
    return f"{text}{MARK}" if flagged else text


def flag_ids(runs: Iterable[Run]) -> str:
    """The flags of the runs as the CSVs give them: their ids, space-separated ("": none)."""
    return " ".join(dict.fromkeys(flag["id"] for run in runs for flag in run.suspect))


def legend(cells: Iterable[tuple[str, str, Sequence[Run]]]) -> list[str]:
    """Lines under a table for its (row, column, flagged runs) cells: one per kind of flag,
    naming its cells row by row (`- test AUROC below chance (0.5): adae 2, 3; gpnd 2`); [] where
    none is flagged."""
    by_flag: dict[str, dict[str, list[str]]] = {}  # flag id → row → columns
    titles: dict[str, str] = {}
    for row, column, runs in cells:
        for run in runs:
            for flag in run.suspect:
                columns = by_flag.setdefault(flag["id"], {}).setdefault(row, [])
                if column not in columns:
                    columns.append(column)
                titles.setdefault(flag["id"], FLAG_TITLES.get(flag["id"], str(flag.get("reason"))))
    if not by_flag:
        return []
    lines = [f"{MARK}: suspect numbers, kept and counted as they are (results.json `suspect`):"]
    for flag_id, rows in by_flag.items():
        named = ("; ".join(" ".join(filter(None, [row, ", ".join(columns)])) for row, columns in rows.items()))
        lines.append(f"- {titles[flag_id]}: {named}")
    return lines

"""The commands kept beside the numbers in reproduced/curves compose with today's config: a kept
command is a promise that it makes those numbers again (results.json commands are checked by
`reproduce --status`, which composes each of them)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from anomaly.config import compose

REPO = Path(__file__).resolve().parents[1]
ENTRY = {"anomaly.train": "train", "anomaly.reproduce": "reproduce"}


def kept_commands() -> list[tuple[str, str]]:
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif where.endswith(".command") and isinstance(node, str) and node.startswith("python -m anomaly."):
            found.append((where, node))

    for path in sorted((REPO / "reproduced" / "curves").glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return [(where, c) for where, c in found if c.split()[2] in ENTRY]  # evaluate takes a run of its own


@pytest.mark.parametrize("where,command", kept_commands(), ids=lambda v: v if "python" not in v else "")
def test_a_kept_curve_command_composes_today(where, command, tmp_path):
    words = shlex.split(command)
    compose(tmp_path, words[3:], config_name=ENTRY[words[2]])  # an unknown key raises


def test_the_curve_commands_are_found():
    assert len(kept_commands()) >= 5  # the DAE / ARAE, f-AnoGAN and ADAE curves' trainings

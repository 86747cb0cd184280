"""Read what an offline W&B run logged, from its `run-<id>.wandb` file.

Offline, wandb (0.31) writes neither `wandb-summary.json` nor `config.yaml`: everything is in the
transaction log, a LevelDB-style log of protobuf `Record`s. Its layout: a 7-byte header (":W&B",
magic 0xBEE1 little-endian, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC32C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter
than a chunk header is zero padding.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[Any]:
    """The protobuf Records of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # padding at a block's end
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            payload = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            payload, pending = pending + chunk, b""
        else:  # zeros: the writer's pre-allocated space
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """The run as logged: its identity, config, history rows and final summary."""

    name: str = ""
    project: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    def metric(self, key: str) -> list[Any]:
        """Every logged value of `key`, in order."""
        return [row[key] for row in self.history if key in row]


def read_run(path: str | Path) -> OfflineRun:
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.project = record.run.display_name, record.run.project
            run.group, run.tags = record.run.run_group, list(record.run.tags)
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def config_value(config: dict[str, Any], dotted: str) -> Any:
    """A value of the logged config by dotted path (wandb stores {"value": …} per top-level key)."""
    first, *rest = dotted.split(".")
    node = config[first]
    node = node.get("value", node) if isinstance(node, dict) else node
    for part in rest:
        node = node[part]
    return node

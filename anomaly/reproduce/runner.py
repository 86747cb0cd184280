"""Run a published table's cells: train once per training group, score each image once, write one
results.json per cell, and print ours next to the paper's.

Cells that differ only in a table's `test_keys` (GPND's outlier share, ARAE p1's anomaly share)
share their training images: the first cell of a group trains (through `anomaly.pipeline.train`,
so it is an ordinary run), the others reuse its model. Their validation and test sets share
their inliers and most outliers, so scores are cached by dataset index and every image is
scored once per model. A cell whose protocol settings would change the training images is
refused (its training indices are hashed and compared with the group's).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from anomaly import AnomalyError, RunInterrupted
from anomaly.data.datamodule import AnomalyDataModule, IndexedImages
from anomaly.methods.base import AnomalyModule, ScoredSplit
from anomaly.config import instantiate
from anomaly.pipeline import build_datamodule, run_summary, train
from anomaly import provenance
from anomaly.reproduce.tables import Cell, Table
from anomaly.results import json_safe, write_results
from anomaly.sweep import slurm_restarts

log = logging.getLogger("anomaly")


class ScoreCache:
    """Scores of one model by dataset index: each image is scored once, whichever cells ask."""

    def __init__(self, model: AnomalyModule, dm: AnomalyDataModule, batch_size: int) -> None:
        self.model, self.dm, self.batch_size = model, dm, batch_size
        self.scores: dict[int, float] = {}

    def add(self, scored: ScoredSplit | None) -> None:
        if scored is not None:
            self.scores.update(zip(scored.index.tolist(), scored.score.tolist()))

    def split(self, dm: AnomalyDataModule, part: str) -> ScoredSplit:
        """The scored split `part` of `dm` (a cell's datamodule over the same images)."""
        indices = np.asarray(getattr(dm.split, part))
        anomalous = np.asarray(getattr(dm.split, f"{part}_anomalous"))
        missing = np.asarray([i for i in indices.tolist() if i not in self.scores], dtype=np.int64)
        if len(missing):
            self._score(missing)
        order = np.argsort(indices, kind="stable")  # ScoredSplit is in index order
        indices, anomalous = indices[order], anomalous[order]
        return ScoredSplit(score=torch.tensor([self.scores[i] for i in indices.tolist()], dtype=torch.float32),
                           anomalous=torch.as_tensor(anomalous, dtype=torch.bool),
                           label=dm.data.labels[torch.as_tensor(indices)].clone(),
                           index=torch.as_tensor(indices, dtype=torch.long))

    def _score(self, indices: np.ndarray) -> None:
        model = self.model
        data = IndexedImages(self.dm.data.images, self.dm.data.labels, indices,
                             np.zeros(len(indices), dtype=bool))
        batches = (data.__getitems__(np.arange(start, min(start + self.batch_size, len(indices))))
                   for start in range(0, len(indices), self.batch_size))
        was_training = model.training
        model.eval()
        with torch.no_grad():  # as Lightning's test loop (no inference mode: some scores need gradients)
            for batch in model.device_batches(batches):
                scores = model.score(batch["image"]).detach().float().reshape(-1).cpu()
                self.scores.update(zip(batch["index"].tolist(), scores.tolist()))
        model.train(was_training)


def compose_cell(table: Table, cell: Cell, budget: str, user: list[str], output_dir: Path,
                 command: str) -> DictConfig:
    """The run config of one cell, as `python -m anomaly.train <its overrides>` would compose it."""
    cfg = compose(config_name="train", overrides=table.overrides(cell, budget, user))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.budget = budget
        cfg.command = command
        cfg.print_config = False
        if slurm_restarts():  # requeued by SLURM: the training cell resumes its last epoch
            cfg.ckpt_path = "last"
    return cfg


def reproduce_info(table: Table, cell: Cell, trained_in: str) -> dict[str, Any]:
    return {"table": table.name, "cell": cell.as_dict, "paper": table.published(cell),
            "paper_mean": table.paper_mean, "paper_source": table.source, "metric": table.metric,
            "trained_in": trained_in}


def evaluate_cell(cfg: DictConfig, state: dict[str, Any], cache: ScoreCache, output_dir: Path,
                  extra: dict[str, Any]) -> dict:
    """A further cell of a training group: its split over the same images, the shared model's
    cached scores, its own threshold (fitted on its validation) and test metrics."""
    model: AnomalyModule = state["model"]
    dm0: AnomalyDataModule = state["dm"]
    output_dir.mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(cfg, split_path=output_dir / "split.npz")
    dm.data = dm0.data  # the same images, decoded once
    dm.setup()
    if dm.split.train_hash() != state["train_hash"]:
        changed = [k for k in extra["reproduce"]["cell"] if k != "variant"]
        raise AnomalyError(f"table cell {extra['reproduce']['cell']} changes the training images "
                           f"(one of {changed}): it cannot share the model trained in "
                           f"{state['run_dir']}; take that key out of the table's test_keys")
    rule = instantiate(cfg.threshold)
    model.threshold_rule = rule
    start = time.perf_counter()
    train_scores = cache.split(dm, "train").score if rule.uses_unlabeled else None
    model.apply_validation(cache.split(dm, "val"), train_scores)
    validate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.apply_test(cache.split(dm, "test"))
    score_seconds = time.perf_counter() - start
    summary = run_summary(cfg, dm, model, validate_seconds=round(validate_seconds, 3),
                          score_seconds=round(score_seconds, 3), epochs=state["epochs"],
                          run_dir=str(output_dir), checkpoint=state["checkpoint"],
                          **provenance.record(cfg), **extra)
    return write_results(output_dir, summary, model.test_scores, float(model.threshold), plots=True)


def failed_results(cfg: DictConfig | None, output_dir: Path, err: BaseException, extra: dict) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": "failed", "error": f"{type(err).__name__}: {err}",
              "method": _method_name(cfg),
              "dataset": OmegaConf.select(cfg, "dataset.name", default=None) if cfg is not None else None,
              "protocol": {"name": _protocol_name(cfg), **{k.split(".", 1)[1]: v for k, v in
                                                          extra["reproduce"]["cell"].items() if k.startswith("protocol.")}},
              "run_dir": str(output_dir), **(provenance.record(cfg) if cfg is not None else {}),
              **extra}
    (output_dir / "results.json").write_text(json.dumps(json_safe(record), indent=2) + "\n")
    return record


def _method_name(cfg: DictConfig | None) -> str | None:
    target = OmegaConf.select(cfg, "method._target_", default=None) if cfg is not None else None
    if target is None:
        return None
    from hydra.utils import get_class

    return getattr(get_class(target), "name", target)


def _protocol_name(cfg: DictConfig | None) -> str | None:
    target = OmegaConf.select(cfg, "protocol._target_", default=None) if cfg is not None else None
    if target is None:
        return None
    from hydra.utils import get_class

    return getattr(get_class(target), "name", None)


def run_group(table: Table, cells: list[Cell], budget: str, user: list[str], run_root: Path,
              results_dir: Path | None) -> list[dict]:
    """Train the group's model once (its first cell) and evaluate every other cell with it."""
    out: list[dict] = []
    state: dict[str, Any] = {}
    cache: ScoreCache | None = None
    first_dir = None
    for position, cell in enumerate(cells):
        cell_dir = run_root / cell.slug()
        command = table.command(cell, budget, user)
        cfg = None
        extra = {"reproduce": reproduce_info(table, cell, trained_in=str(first_dir or cell_dir))}
        try:
            cfg = compose_cell(table, cell, budget, user, cell_dir, command)
            if position == 0:
                first_dir = cell_dir
                results = train(cfg, keep=state, extra=extra)
                state["train_hash"] = results["train_hash"]
                state["run_dir"] = str(cell_dir)
                state["epochs"] = results.get("epochs")
                state["checkpoint"] = results.get("checkpoint")
                cache = ScoreCache(state["model"], state["dm"], int(cfg.data.get("eval_batch_size") or 512))
                cache.add(state["model"].val_scores)
                cache.add(state["model"].test_scores)
            else:
                if not state:
                    raise AnomalyError(f"the group's training (cell {cells[0].as_dict}) failed")
                results = evaluate_cell(cfg, state, cache, cell_dir, extra)
        except (KeyboardInterrupt, RunInterrupted):
            raise
        except Exception as err:  # noqa: BLE001 - one failed cell must not end the table
            if not isinstance(err, AnomalyError):
                log.error("cell %s failed:\n%s", cell.as_dict, traceback.format_exc())
            else:
                log.error("cell %s failed: %s", cell.as_dict, err)
            results = failed_results(cfg, cell_dir, err, extra)
        out.append(results)
        if results_dir is not None:
            keep_results(results, cell_dir, results_dir / table.name / budget / cell.slug())
    return out


# run-local paths that mean nothing in the repository copy
_LOCAL_KEYS = ("run_dir", "checkpoint", "resumed_from")


def keep_results(results: dict, run_dir: Path, target: Path) -> None:
    """The cell's results.json, copied into the results folder kept in the repository (small JSON
    only: no checkpoints, scores or plots); run-local paths are dropped."""
    source = run_dir / "results.json"
    if not source.is_file():
        return
    data = json.loads(source.read_text())
    for key in _LOCAL_KEYS:
        data.pop(key, None)
    if isinstance(data.get("reproduce"), dict):
        data["reproduce"]["trained_in"] = Path(str(data["reproduce"]["trained_in"])).name
    target.mkdir(parents=True, exist_ok=True)
    (target / "results.json").write_text(json.dumps(data, indent=2) + "\n")


def comparison_rows(table: Table, results: list[dict]) -> list[tuple[str, str, str, str]]:
    """(cell, ours, paper, Δ) for the table's metric, per cell."""
    rows = []
    for data in results:
        info = data.get("reproduce") or {}
        cell = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in (info.get("cell") or {}).items())
        ours = (data.get("metrics") or {}).get(table.metric)
        paper = (info.get("paper") or {}).get(table.metric)
        if data.get("status") != "ok" or ours is None:
            rows.append((cell, data.get("status", "failed"), _num(paper), ""))
            continue
        delta = f"{ours - paper:+.3f}" if paper is not None else ""
        rows.append((cell, f"{ours:.3f}", _num(paper), delta))
    return rows


def _num(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _short(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def print_comparison(table: Table, budget: str, results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    view = RichTable(title=f"{table.name} · budget {budget} · {table.metric}: ours vs {table.source}")
    for column in ("cell", "ours", "paper", "Δ"):
        view.add_column(column, justify="left" if column == "cell" else "right")
    for row in comparison_rows(table, results):
        view.add_row(*row)
    Console().print(view)

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

import copy
import json
import logging
import math
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from anomaly import AnomalyError, RunInterrupted, config_schema, distributed
from anomaly.data.datamodule import AnomalyDataModule, IndexedImages
from anomaly.evaluation.gather import ScoredSplit
from anomaly.evaluation.post_processor import PostProcessor
from anomaly.methods.base import AnomalyModule
from anomaly.checkpoints import RESUME_COMMAND
from anomaly.config import config_hash, instantiate
from anomaly.loggers import WANDB_TARGET, table_group
from anomaly.pipeline import build_datamodule, run_summary, train
from anomaly import provenance
from anomaly.reproduce import kept as kept_results
from anomaly.reproduce.tables import Cell, Table, _key
from anomaly.results import json_safe, write_json, write_results

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


_compositions: dict[tuple[str, ...], DictConfig] | None = None


@contextmanager
def one_composition_per_cell():
    """Within it, a cell's overrides are composed once: the checks before anything trains, the
    lookup of its kept result and its run take copies (Hydra's composition is most of the cost of
    a table's bookkeeping: 0.1–0.2 s a cell)."""
    global _compositions
    outer, _compositions = _compositions, {}
    try:
        yield
    finally:
        _compositions = outer


def _compose_train(overrides: list[str]) -> DictConfig:
    if _compositions is None:
        return compose(config_name="train", overrides=overrides)
    key = tuple(overrides)
    if key not in _compositions:
        _compositions[key] = compose(config_name="train", overrides=overrides)
    return copy.deepcopy(_compositions[key])


def compose_cell(table: Table, cell: Cell, budget: str, user: list[str], output_dir: Path,
                 command: str) -> DictConfig:
    """The run config of one cell, as `python -m anomaly.train <its overrides>` would compose and
    check it (the checks fill in what a method derives: a two-stage method's max_epochs)."""
    cfg = _compose_train(table.overrides(cell, budget, user))
    config_schema.check_train(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.budget = budget
        cfg.command = command
        cfg.print_config = False
        for node in (cfg.get("logger") or {}).values():  # W&B: the table's cells in one group
            if node is not None and node.get("_target_") == WANDB_TARGET and not node.get("group"):
                node.group = table_group(table.name, budget)
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
    post_processor = PostProcessor(instantiate(cfg.threshold)).attach(model)
    start = time.perf_counter()
    train_scores = cache.split(dm, "train").score if post_processor.rule.uses_unlabeled else None
    model.val_scores = cache.split(dm, "val")
    post_processor.fit(model.val_scores, train_scores)
    model.evaluator.validation(model.val_scores, post_processor.value)
    model.evaluator.warn_if_nonsense(model.name)
    validate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.test_scores = cache.split(dm, "test")
    model.evaluator.test(model.test_scores, post_processor.value)
    score_seconds = time.perf_counter() - start
    summary = run_summary(cfg, dm, model, validate_seconds=round(validate_seconds, 3),
                          score_seconds=round(score_seconds, 3), epochs=state["epochs"], cost=state.get("cost"),
                          run_dir=str(output_dir), checkpoint=state["checkpoint"],
                          **provenance.record(cfg), **extra)
    return write_results(output_dir, summary, model.test_scores, post_processor.value,
                         plots=bool(cfg.get("plots", True)))  # as the group's trained cell (pipeline._test_write)


def failed_results(cfg: DictConfig | None, output_dir: Path, err: BaseException, extra: dict) -> dict:
    record = {"status": "failed", "error": f"{type(err).__name__}: {err}",
              "method": _method_name(cfg),
              "dataset": OmegaConf.select(cfg, "dataset.name", default=None) if cfg is not None else None,
              "protocol": {"name": _protocol_name(cfg), **{k.split(".", 1)[1]: v for k, v in
                                                          extra["reproduce"]["cell"].items() if k.startswith("protocol.")}},
              "run_dir": str(output_dir), **(provenance.record(cfg) if cfg is not None else {}),
              **extra}
    if distributed.process_rank() == 0:  # under DDP only rank 0 writes the cell's files
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "results.json", json_safe(record))
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


class DataCache:
    """Decoded datasets by loader settings: a table's cells load each dataset once to check
    their kept results' data fingerprints."""

    def __init__(self) -> None:
        self.sets: dict[str, Any] = {}

    def datamodule(self, cfg: DictConfig) -> AnomalyDataModule:
        """The cell's datamodule, set up (its split drawn) on the cached images."""
        key = OmegaConf.to_yaml(OmegaConf.create({"loader": OmegaConf.to_container(cfg.dataset.loader, resolve=True),
                                                  "size": cfg.dataset.get("image_size"),
                                                  "mode": cfg.dataset.get("resize_mode", "bilinear")}))
        dm = build_datamodule(cfg)
        if key in self.sets:
            dm.data = self.sets[key]
        else:
            dm.prepare_data()
            self.sets[key] = dm.data
        dm.setup()
        return dm

    def fingerprint(self, cfg: DictConfig) -> dict[str, str]:
        return self.datamodule(cfg).fingerprint()


def kept_differences(cfg: DictConfig, target: Path, data: DataCache) -> list[str] | None:
    """None where no ok result is kept in `target`; else what differs between it and this run
    config on its data ([]: it is this config's result and may be skipped)."""
    kept = kept_results.read(target / "results.json")
    if not kept_results.is_kept_ok(kept):
        return None
    differ = kept_results.config_identity(kept, provenance.result_config(cfg), config_hash(cfg))
    if differ:  # the config already differs: no need to load the data
        return differ
    return kept_results.data_identity(kept, data.fingerprint(cfg))


def run_group(table: Table, cells: list[Cell], budget: str, user: list[str], run_root: Path,
              results_dir: Path | None, rerun: bool = False, suffix: str = "",
              data: DataCache | None = None) -> list[dict]:
    """Train the group's model once (its first cell) and evaluate every other cell with it.

    Where every cell already has an ok result kept in `results_dir` of the same run config and
    data, the group is skipped (its kept results are returned, marked `skipped`) unless
    `rerun`; where a cell's kept result is of another config or data, the group is refused
    (nothing trained) unless `rerun`, naming what differs. Two invocations of one table take the
    group in turn (a lock beside the kept results): the second finds the first's results kept.
    The training cell resumes the newest checkpoint of the same run config and data under
    paths.log_dir (`ckpt_path=last`: an interrupted training goes on from its last epoch, a
    finished one is loaded instead of trained again; a job of an earlier fan-out too) unless
    `rerun` or the command line gives a ckpt_path. `suffix` names the run settings given beside
    the grid (`-seed1`) in each cell's folder. `rerun="stale"`: refused groups are made again
    (their kept results replaced), the rest skipped or resumed as without rerun.
    A run stopped by a signal (`RunInterrupted`) ends the table: its cell keeps no result."""
    names = [cell.slug() + suffix for cell in cells]
    data = data or DataCache()
    targets = [results_dir / table.name / budget / name if results_dir is not None else None for name in names]
    guard = kept_results.lock(targets[0]) if targets[0] is not None and distributed.process_rank() == 0 else None
    if guard is not None:
        try:
            guard.acquire(timeout=0)
        except Exception:  # noqa: BLE001 - filelock.Timeout: another process holds the group
            log.info("%s: another process is making this training's cells; waiting for it", targets[0])
            guard.acquire()
    try:
        if results_dir is not None:
            found = kept_or_refused(table, cells, names, targets, budget, user, run_root, rerun, data)
            if found is None and rerun == "stale":
                # only a stale cell's group trains; its cells of this config are made again with it
                log.info("%s: re-made (rerun=stale: a kept result of another config or data)", targets[0])
            if found is not None:
                return found
        return _run_cells(table, cells, names, targets, budget, user, run_root, rerun)
    finally:
        if guard is not None:
            guard.release()


def kept_or_refused(table: Table, cells: list[Cell], names: list[str], targets: list[Path | None], budget: str,
                    user: list[str], run_root: Path, rerun: bool, data: DataCache) -> list[dict] | None:
    """The group's kept results where every cell has one of this config and data (skipped); the
    group's cells refused where one holds a result of another config or data (without rerun);
    None: train it."""
    kept, conflicts = [], []
    for cell, name, target in zip(cells, names, targets):
        cfg = compose_cell(table, cell, budget, user, run_root / name, table.command(cell, budget, user))
        differ = kept_differences(cfg, target, data)
        if differ is None:
            kept.append(None)
        elif differ:
            conflicts.append((cell, target, differ))
            kept.append(None)
        else:
            kept.append({**kept_results.read(target / "results.json"), "skipped": True})
    if conflicts and rerun is False:
        out = []
        for cell, target, differ in conflicts:
            message = (f"{target} holds a result of another run config or data ({'; '.join(differ)}): "
                       "kept as it is; rerun=stale makes the stale cells again with today's settings")
            log.error("cell %s refused: %s", cell.as_dict, message)
            out.append({"status": "refused", "error": message, "reproduce": {"cell": cell.as_dict}})
        return out
    if rerun is not True and all(k is not None for k in kept):  # rerun=stale: the cells of this config stay
        return kept
    return None


def _run_cells(table: Table, cells: list[Cell], names: list[str], targets: list[Path | None], budget: str,
               user: list[str], run_root: Path, rerun: bool) -> list[dict]:
    out: list[dict] = []
    state: dict[str, Any] = {}
    cache: ScoreCache | None = None
    first_dir = None
    resume = rerun is not True and not any(_key(o) == "ckpt_path" for o in user)
    for position, (cell, name, target) in enumerate(zip(cells, names, targets)):
        cell_dir = run_root / name
        command = table.command(cell, budget, user)
        cfg = None
        extra = {"reproduce": reproduce_info(table, cell, trained_in=str(first_dir or cell_dir))}
        try:
            cfg = compose_cell(table, cell, budget, user, cell_dir, command)
            if position == 0 and resume:
                # an earlier run of this cell's config and data anywhere under paths.log_dir (an
                # interrupted training's last epoch, or a finished training), this table's
                # earlier invocations and their fan-out jobs included
                with open_dict(cfg):
                    cfg.ckpt_path = "last"
            if position == 0:
                first_dir = cell_dir
                # a stopped training resumes with the same command, where resume finds checkpoints
                results = train(cfg, keep=state, extra=extra,
                                resume_command="the same command" if resume else RESUME_COMMAND)
                state["train_hash"] = results["train_hash"]
                state["run_dir"] = str(cell_dir)
                state["epochs"] = results.get("epochs")
                state["checkpoint"] = results.get("checkpoint")
                state["cost"] = results.get("cost")  # the shared training's, for every cell it serves
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
        if target is not None and distributed.process_rank() == 0:
            kept_results.keep_results(cell_dir, target, rerun=bool(rerun))
    return out


def comparison_rows(table: Table, results: list[dict]) -> list[tuple[str, ...]]:
    """(cell, epochs, ours, paper, Δ) for the table's metric, per cell. A published number that is
    a mean over the classes (its `where` names none) is shown as such, never set against one
    class: `0.932 (mean)`, no Δ (the report sets a mean of ours over every class against it)."""
    from anomaly.provenance import schedule_text
    from anomaly.report.group import CELL_CLASS

    means_only = bool(table.paper) and not any(k in CELL_CLASS for e in table.paper for k in (e.get("where") or {}))
    rows = []
    for data in results:
        info = data.get("reproduce") or {}
        cell = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in (info.get("cell") or {}).items())
        epochs = schedule_text(data) or "—"
        ours = (data.get("metrics") or {}).get(table.metric)
        paper = (info.get("paper") or {}).get(table.metric)
        shown = _num(paper) + (" (mean)" if means_only and paper is not None else "")
        if data.get("status") != "ok" or ours is None:
            rows.append((cell, epochs, data.get("status", "failed"), shown, ""))
            continue
        delta = f"{ours - paper:+.3f}" if paper is not None and not means_only else ""
        rows.append((cell, epochs, f"{ours:.3f}", shown, delta))
    return rows


COMPARISON_COLUMNS = ("cell", "epochs", "ours", "paper", "Δ")


def _num(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _short(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def print_comparison(table: Table, budget: str, results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    view = RichTable(title=f"{table.name} · budget {budget} · {table.metric}: ours vs {table.source}")
    for column in COMPARISON_COLUMNS:
        view.add_column(column, justify="left" if column == "cell" else "right")
    for row in comparison_rows(table, results):
        view.add_row(*row)
    Console().print(view)

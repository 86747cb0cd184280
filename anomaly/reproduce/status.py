"""`python -m anomaly.reproduce --status [table=NAME] [budget=NAME] [--no-data] [--fill]`: whether every
kept result still is what its command makes (`--fill`: first record what results kept before
fingerprints and portable commands lack, where it can be verified: `fill_identity`).

Per table and budget, each kept cell is one of:
- ok: its command composes the kept run config today, on the same images;
- stale: the command now composes another config (a default changed: the keys and both values
  are named) or draws other images (`data_fingerprint`; another copy of the dataset);
- older code: ok, but its method's files (the method module and the nets it imports) changed in
  git since the cell's code (its recorded commit; for a cell kept before commits were recorded,
  `code.at_most`: the last commit that wrote its file before then, an upper bound), by a commit
  that reproduced/numbers_neutral_commits.txt does not list as changing no number (each listed
  with its bit-equal evidence), or in the working tree;
- failed: a kept record that is not ok;
and the grid's cells at that budget that no kept result covers are counted as missing.

No training: each cell's config is composed (one Hydra composition per variant and command-line
settings; the grid's own keys are set on a copy), the data are decoded once per dataset to
check fingerprints (`--no-data` skips that, and with it torch). Exit 0 when nothing is stale,
1 when something is (as `git diff --exit-code`), 2 for bad arguments.
"""

from __future__ import annotations

import ast
import copy
import functools
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from anomaly import AnomalyError
from anomaly.provenance import CONF_DIR, portable_words, result_config
from anomaly.reproduce import kept as kept_results
from anomaly.reproduce.tables import Cell, Table, _key, _text, _thaw

REPO = CONF_DIR.parent
STATES = ("ok", "stale", "older code", "failed", "missing")


@dataclass
class CellStatus:
    table: str
    budget: str
    cell: str  # the kept folder's name
    state: str  # one of STATES
    why: list[str] = field(default_factory=list)  # stale: what differs; older code: the files; failed: the error


def command_overrides(table: Table, kept: dict) -> list[str]:
    """The settings a kept cell's command gives beside its table, budget and grid values."""
    words = shlex.split(str(kept.get("command") or ""))[3:]  # after `python -m anomaly.reproduce`
    grid = set((kept.get("reproduce") or {}).get("cell") or {})
    from anomaly.reproduce.cli import OWN_KEYS

    return [w for w in portable_words(words) if _key(w) not in grid and _key(w) not in OWN_KEYS]


class Composer:
    """Run configs of a table's cells: one Hydra composition per (variant, budget, command-line
    settings); each cell's grid values are set on a copy of it (as its overrides would set them)."""

    def __init__(self) -> None:
        self.bases: dict[tuple, DictConfig] = {}

    def config(self, table: Table, cell: Cell, budget: str, user: list[str]) -> DictConfig:
        """The cell's run config, checked as a run checks it (which fills in derived settings)."""
        from anomaly import config_schema

        cfg = self._composed(table, cell, budget, user)
        config_schema.check_train(cfg)
        return cfg

    def _composed(self, table: Table, cell: Cell, budget: str, user: list[str]) -> DictConfig:
        from anomaly.config import compose

        plain = all("." in k or k == "seed" for k, _ in cell.values if k != "variant")
        if not plain:  # a grid key that picks a config group: its own composition
            return compose(".", table.overrides(cell, budget, user))
        key = (table.name, cell.get("variant"), budget, tuple(user))
        if key not in self.bases:
            self.bases[key] = compose(".", table.overrides(cell, budget, user))
        cfg = copy.deepcopy(self.bases[key])
        user_keys = {_key(o) for o in user}
        with open_dict(cfg):
            for k, value in cell.values:
                if k != "variant" and k not in user_keys:
                    OmegaConf.update(cfg, k, _thaw(value), merge=False)
        return cfg


def last_commits(results_dir: Path) -> dict[str, str]:
    """For every file under results_dir: the last commit that wrote it (git log, newest first)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "log", "--format=@%H", "--name-only", "--",
                              str(results_dir.resolve())], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    commit = None
    for line in out.stdout.splitlines():
        if line.startswith("@"):
            commit = line[1:]
        elif line and commit:
            found.setdefault(line, commit)
    return found


def _repo_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@functools.cache
def method_files(target: str) -> list[str]:
    """The repository files a method's numbers come from: its module and the nets it imports
    (found by path, without importing them: no torch)."""
    path = _module_path(target.rsplit(".", 1)[0])
    if path is None:
        return []
    files = {path}
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        files.update(p for p in map(_module_path, names) if p is not None and "nets" in p.parts)
    return sorted(str(p.relative_to(REPO)) for p in files)


def _module_path(module: str) -> Path | None:
    if not module.startswith("anomaly."):
        return None
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


NEUTRAL_COMMITS = REPO / "reproduced" / "numbers_neutral_commits.txt"


def neutral_commits(path: Path = NEUTRAL_COMMITS) -> set[str]:
    """The commits listed as changing no number (their full hashes; `#` lines are comments)."""
    if not path.is_file():
        return set()
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


class CodeCheck:
    """Which of a method's files changed since a commit: by a commit after it that is not listed
    in reproduced/numbers_neutral_commits.txt, or in the working tree."""

    def __init__(self, neutral: set[str] | None = None, repo: Path = REPO) -> None:
        self.neutral = neutral_commits() if neutral is None else neutral
        self.repo = repo
        self.cache: dict[tuple, list[str]] = {}

    def changed(self, commit: str, files: list[str]) -> list[str]:
        key = (commit, tuple(files))
        if key not in self.cache:
            self.cache[key] = [f for f in files if self._changed(commit, f)]
        return self.cache[key]

    def _changed(self, commit: str, file: str) -> bool:
        try:
            log = subprocess.run(["git", "-C", str(self.repo), "log", "--format=%H", f"{commit}..HEAD", "--", file],
                                 capture_output=True, text=True, timeout=60)
            tree = subprocess.run(["git", "-C", str(self.repo), "diff", "--quiet", "HEAD", "--", file],
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        if log.returncode != 0:  # a commit this clone does not hold: nothing to judge by
            return False
        return bool(set(log.stdout.split()) - self.neutral) or tree.returncode == 1


def check(results_dir: Path = Path("reproduced"), only_table: str | None = None, only_budget: str | None = None,
          data: bool = True, code: bool = True) -> list[CellStatus]:
    """The state of every kept cell (and the missing ones) under results_dir (`code=False`: "older
    code" is not looked for, for callers that want the stale cells only)."""
    from anomaly.reproduce.cli import load_tables

    tables = [t for t in load_tables(only_table) if only_table is None or t.name == only_table]
    if only_table is not None and not tables:
        raise AnomalyError(f"table={only_table}: no such table (python -m anomaly.reproduce --list)")
    composer = Composer()
    code_check, commits = (CodeCheck(), last_commits(results_dir)) if code else (None, {})
    cache = None
    if data:
        from anomaly.reproduce.runner import DataCache

        cache = DataCache()
    out: list[CellStatus] = []
    for table in tables:
        for budget_dir in sorted(p for p in (results_dir / table.name).glob("*") if p.is_dir()):
            budget = budget_dir.name
            if budget not in table.budgets or (only_budget and budget != only_budget):
                continue
            out += _check_budget(table, budget, budget_dir, composer, code_check, commits, cache)
    return out


def _check_budget(table: Table, budget: str, budget_dir: Path, composer: Composer, code: CodeCheck | None,
                  commits: dict[str, str], cache: Any) -> list[CellStatus]:
    from anomaly.config import config_hash

    out, covered = [], set()
    for path in sorted(budget_dir.glob("*/results.json")):
        kept = kept_results.read(path) or {}
        name = path.parent.name
        cell_values = (kept.get("reproduce") or {}).get("cell")
        if kept.get("debug"):
            continue
        if not kept_results.is_kept_ok(kept) or not cell_values:
            error = str(kept.get("error") or kept.get("problem") or kept.get("status") or "unreadable")
            out.append(CellStatus(table.name, budget, name, "failed", [error.splitlines()[0][:200]]))
            continue
        cell = Cell.of(cell_values)
        covered.add(cell)
        user = command_overrides(table, kept)
        try:
            cfg = composer.config(table, cell, budget, user)
        except Exception as err:  # noqa: BLE001 - a command that no longer composes is stale
            out.append(CellStatus(table.name, budget, name, "stale", [f"its command no longer composes: {err}"]))
            continue
        identity = result_config(cfg)
        differ = kept_results.config_identity(kept, identity, config_hash(cfg, identity))
        if not differ and cache is not None:
            try:
                differ = kept_results.data_identity(kept, cache.fingerprint(cfg))
            except AnomalyError as err:  # the data are not on this machine: said, not judged
                out.append(CellStatus(table.name, budget, name, "ok", [f"data not checked: {err}"]))
                continue
        if differ:
            out.append(CellStatus(table.name, budget, name, "stale", differ))
            continue
        code_info = kept.get("code") or {}
        commit = code_info.get("commit") or code_info.get("at_most") or commits.get(_repo_path(path))
        changed = code.changed(commit, method_files(str(cfg.method._target_))) if commit and code else []
        if changed:
            out.append(CellStatus(table.name, budget, name, "older code", [f"{', '.join(changed)} changed since {commit[:8]}"]))
        else:
            out.append(CellStatus(table.name, budget, name, "ok"))
    wanted = table.cells(table.budget_restrictions(budget))
    out += [CellStatus(table.name, budget, c.slug(), "missing") for c in wanted if c not in covered]
    return out


def fill_identity(results_dir: Path = Path("reproduced"), only_table: str | None = None) -> dict[str, int]:
    """For kept results from before data were fingerprinted (`--status --fill`): where the
    cell's command composes the kept config and draws the kept split here (its training
    indices' hash and every split's size match the record), record this data's fingerprint;
    and the size of the dataset copy it was made on (`dataset_size`); and every kept command
    without machine paths (they move to `command_paths`), with its CPU form for a device run; and,
    where the command composes the kept config, the published settings it is measured against
    (`paper_settings`, with the cost's published epochs and schedule share) as the config
    describes them today: a description of the run, not a number it made.
    Returns counts: filled, commands rewritten, described anew, not verifiable."""
    from anomaly.reproduce.cli import load_tables
    from anomaly.reproduce.runner import DataCache
    from anomaly.results import write_json

    composer, cache, commits = Composer(), DataCache(), last_commits(results_dir)
    counts = {"filled": 0, "commands": 0, "described": 0, "unverified": 0}
    for table in load_tables(only_table):
        for path in sorted((results_dir / table.name).glob("*/*/results.json")):
            kept = kept_results.read(path)
            budget = path.parent.parent.name
            if not kept_results.is_kept_ok(kept) or budget not in table.budgets:
                continue
            changed = _portable_record(kept)
            counts["commands"] += changed
            if not kept.get("code"):  # the code is unknown: at most the commit that last wrote the file
                kept["code"] = {"version": None, "commit": None, "dirty": None,
                                "at_most": commits.get(_repo_path(path))}
                changed = True
            has_cell = bool((kept.get("reproduce") or {}).get("cell"))
            cfg = _verified_config(kept, table, budget, composer) if has_cell else None
            if has_cell and (not kept.get("data_fingerprint") or not kept.get("dataset_size")):
                try:
                    dm = cache.datamodule(cfg) if cfg is not None else None
                except AnomalyError:
                    dm = None
                if dm is not None and _same_split(kept, dm) and \
                        kept.get("data_fingerprint") in (None, dm.fingerprint()):
                    kept["data_fingerprint"] = dm.fingerprint()
                    kept["dataset_size"] = dm.data.size()
                    counts["filled"] += 1
                    changed = True
                else:
                    counts["unverified"] += 1
            if cfg is not None and _describe_anew(kept, cfg):
                counts["described"] += 1
                changed = True
            if changed:
                write_json(path, kept)
    return counts


def _verified_config(kept: dict, table: Table, budget: str, composer: Composer) -> Any:
    """The run config a kept cell's command composes today, where it is the kept one; else None."""
    from anomaly.config import config_hash

    try:
        cfg = composer.config(table, Cell.of(kept["reproduce"]["cell"]), budget, command_overrides(table, kept))
    except AnomalyError:
        return None
    identity = result_config(cfg)
    return None if kept_results.config_identity(kept, identity, config_hash(cfg, identity)) else cfg


def _describe_anew(kept: dict, cfg: Any) -> bool:
    """Replace a kept cell's `paper_settings` (and the cost's published epochs and share of them)
    by what its verified config says today; whether it did."""
    from anomaly.provenance import paper_settings

    described = paper_settings(cfg)
    if described == kept.get("paper_settings"):
        return False
    kept["paper_settings"] = described
    cost = kept.get("cost") or {}
    stages = cost.get("stages") or {}
    if described and len(stages) == 1:  # one stage: its share is its epochs over the published ones
        (stage,) = stages.values()
        published = (described.get("keys") or {}).get("trainer.max_epochs")
        if isinstance(published, int) and published > 0:
            old = stage.get("published")
            stage["published"] = published
            if isinstance(cost.get("schedule_share"), (int, float)) and isinstance(old, (int, float)) and old > 0:
                cost["schedule_share"] = cost["schedule_share"] * old / published
    return True


def _same_split(kept: dict, dm: Any) -> bool:
    sizes = dm.split.sizes()
    recorded = kept.get("split_sizes") or {}
    return (kept.get("train_hash") in (None, dm.split.train_hash()) and bool(recorded)
            and all(sizes.get(k) == v for k, v in recorded.items()))


def _portable_record(kept: dict) -> bool:
    """The kept command without machine paths (recorded beside it instead); True if it changed."""
    from anomaly.provenance import cpu_command

    command = str(kept.get("command") or "")
    words = shlex.split(command)
    portable = " ".join(shlex.quote(w) for w in portable_words(words))
    if portable == command:
        return False
    paths = {w.split("=", 1)[0].split(".", 1)[1]: w.split("=", 1)[1] for w in words if w.startswith("paths.")}
    kept["command"] = portable
    kept["command_paths"] = {**(kept.get("command_paths") or {}), **paths}
    kept["cpu_command"] = cpu_command(portable)
    return True


def render(found: list[CellStatus], width: int = 80) -> list[str]:
    """The status as lines of at most `width` columns: a count per table × budget, then the
    stale, older-code and failed cells with what each is about."""
    lines = [f"{'table / budget':<34}{'ok':>6}{'stale':>7}{'older':>7}{'failed':>8}{'missing':>9}"]
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for s in found:
        groups.setdefault((s.table, s.budget), dict.fromkeys(STATES, 0))[s.state] += 1
    for (table, budget), counts in groups.items():
        label = f"{table} / {budget}"
        label = label if len(label) <= 33 else label[:32] + "…"
        lines.append(f"{label:<34}{counts['ok']:>6}{counts['stale']:>7}{counts['older code']:>7}"
                     f"{counts['failed']:>8}{counts['missing']:>9}")
    for state in ("stale", "older code", "failed"):
        chosen = [s for s in found if s.state == state]
        if not chosen:
            continue
        lines += ["", f"{state}:"]
        by_reason: dict[tuple[str, str, str], list[str]] = {}
        for s in chosen:
            by_reason.setdefault((s.table, s.budget, "; ".join(s.why)), []).append(s.cell)
        for (table, budget, why), cells in by_reason.items():
            where = f"{table}/{budget}/{cells[0]}" + (f" (+{len(cells) - 1} cells)" if len(cells) > 1 else "")
            lines += _fold(f"  {where}: {why}", width, "    ")
    notes = [s for s in found if s.state == "ok" and s.why]
    if notes:
        lines += ["", f"{len(notes)} ok cells' data were not checked here ({notes[0].why[0][:60]}…)"]
    return lines


def _fold(text: str, width: int, indent: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, subsequent_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [text]


def main(argv: list[str]) -> int:
    """The `--status` command: prints the status and returns the exit code."""
    options = {}
    data, fill = True, False
    for arg in argv:
        if arg == "--status":
            continue
        if arg == "--no-data":
            data = False
        elif arg == "--fill":
            fill = True
        elif "=" in arg and arg.split("=", 1)[0] in ("table", "budget", "results_dir"):
            key, value = arg.split("=", 1)
            options[key] = value
        else:
            print(f"error: reproduce --status takes table=NAME, budget=NAME, results_dir=DIR, --no-data and --fill, "
                  f"not {arg}", file=sys.stderr)
            return 2
    results_dir = Path(options.get("results_dir", "reproduced"))
    if fill:
        counts = fill_identity(results_dir, options.get("table"))
        print(f"data fingerprints filled in: {counts['filled']}; commands made portable: {counts['commands']}; "
              f"published settings described anew: {counts['described']}; "
              f"not verifiable here (stale, or another split): {counts['unverified']}")
    try:
        found = check(results_dir, options.get("table"), options.get("budget"), data=data)
    except AnomalyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in render(found):
        print(line)
    stale = sum(s.state == "stale" for s in found)
    print(f"\n{stale} stale cell{'s' * (stale != 1)}" + (": `python -m anomaly.reproduce table=… rerun=stale` re-makes them"
                                                        if stale else "; every kept cell re-makes from its command"))
    return 1 if stale else 0

"""What a run shows on the terminal: the config tree, the results table, a prediction summary,
and `user_errors` (an `AnomalyError` as one `error:` line, exit 2). Everything shown also goes to
the run's log file (`anomaly.runlog`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError, runlog
from anomaly.evaluation import METRIC_LABELS


def print_config_tree(cfg: DictConfig, save_to: Path | None = None, echo: bool = True) -> None:
    """The composed config as a rich tree: printed if `echo`, saved beside the run and written to
    the run's log (train.log), never cut at the terminal's width (long paths stay whole)."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    order = ["method", "dataset", "protocol", "data", "threshold", "trainer", "callbacks", "logger", "paths"]
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    longest = 0
    for key in keys:
        node = cfg[key]
        try:
            text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        except Exception:  # unresolvable outside a Hydra run
            text = OmegaConf.to_yaml(node) if isinstance(node, DictConfig) else str(node)
        longest = max([longest, *(len(line) for line in text.splitlines())])
        tree.add(key, guide_style="dim").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    width = max(120, longest + 16)  # the tree's guides indent the YAML by 8 characters
    if echo:
        console = Console()
        (console if console.width >= width else Console(width=width)).print(tree)
    text = runlog.render(tree, width)
    if save_to is not None:
        Path(save_to).write_text(text + "\n")
    runlog.to_log(text)


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from anomaly.plots import run_title

    table = Table(title=run_title(results))
    table.add_column("test metric")
    table.add_column("value", justify="right")
    metrics = dict(results.get("metrics") or {})
    threshold = metrics.pop("threshold", None)  # a setting fitted on validation, not a metric
    for key, value in metrics.items():
        table.add_row(METRIC_LABELS.get(key, key), "—" if value is None else f"{value:.4f}")
    lines = [table]
    if threshold is not None:
        lines.append(f"threshold {threshold:.4g}: fitted on validation ({results.get('threshold_strategy')}); "
                     "the F1, precision and recall are at it")
    if results.get("problem"):
        lines.append(f"[yellow]note:[/] {results['problem']}")
    if results.get("status") == "ok":  # an unusable score is already the problem above
        lines += [f"[yellow]suspect:[/] {flag['reason']}" for flag in results.get("suspect") or []]
    lines.append(f"run dir: {results['run_dir']}")
    console = Console()
    for line in lines:
        console.print(line, soft_wrap=isinstance(line, str))  # a path is never folded
    runlog.to_log("\n".join(runlog.render(line, 10_000 if isinstance(line, str) else 200) for line in lines))


def tuning_metric() -> str | None:
    """The validation metric a tuning sweep (hparams_search=optuna) optimises; None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - outside a Hydra app
        return None
    if hc.runtime.choices.get("hydra/sweeper") != "optuna":
        return None
    return str(hc.get("job", {}).get("config", {}).get("optimized_metric", None) or "auroc")


def print_trial(results: dict, metric: str) -> None:
    """A tuning trial's line: its validation number, named as such (the test numbers stay in its
    results.json: a table of them per trial invites choosing on the test split)."""
    value = (results.get("val_metrics") or {}).get(metric)
    shown = "—" if value is None else f"{value:.4f}"
    print_line(f"trial: validation {METRIC_LABELS.get(metric, metric)} {shown} (the metric tuned); "
               f"run dir: {results.get('run_dir')}")


def print_line(text: str) -> None:
    """One plain line on stdout (never folded: paths stay whole), and in the run's log."""
    print(text, flush=True)
    runlog.to_log(text)


@contextmanager
def user_errors(discard: Path | None = None) -> Iterator[None]:
    """Print an AnomalyError as one line and exit 2 (no traceback: the message says it all);
    `discard`: the run dir Hydra made, removed when the refusal left nothing in it but Hydra's
    own files (a refused setting leaves nothing behind)."""
    try:
        yield
    except AnomalyError as err:
        runlog.error(str(err))
        if discard is not None:
            discard_unused_run_dir(discard)
        sys.exit(2)


# what a run dir holds before any work: Hydra's config copy, the log, the config tree, the split
UNUSED_RUN_FILES = {".hydra", "config_tree.log", "split.npz"}


def discard_unused_run_dir(run_dir: Path) -> bool:
    """Remove a run dir that holds nothing but what every run writes before it starts work
    (Hydra's .hydra/, *.log, config_tree.log, split.npz); True if it was removed. A dir with
    anything else (a checkpoint, results, a user's own files) is left as it is."""
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    if any(p.name not in UNUSED_RUN_FILES and p.suffix != ".log" for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


# Hydra flags after which the command line is Hydra's own business (help, shell completion, …)
HYDRA_ONLY_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc",
                    "--experimental-rerun", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p"}  # flags that take the next argument


def help_without(main: Callable[[], Any], groups: set[str]) -> None:
    """Hydra's `--help`, without the config groups another entry point uses (`anomaly.train
    --help` need not list `table:`, which only `anomaly.reproduce` reads)."""
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            main()
    finally:
        print("\n".join(line for line in buffer.getvalue().splitlines()
                        if line.split(":", 1)[0] not in groups), flush=True)


def check_command_line(config_name: str, argv: list[str]) -> None:
    """Refuse a command line Hydra would refuse (a misspelled key, an unknown option of a config
    group, an override it cannot parse) with one `error:` line, a "did you mean" where a near
    name exists, and exit 2, as every refusal of bad input here does (Hydra's own refusal exits
    1 and suggests `+key=…`, which would add a key nothing reads). A sweep is checked at its first
    value of each swept key; `hydra.*` settings are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(a.split("=", 1)[0] in HYDRA_ONLY_FLAGS for a in argv):
        return
    args, skip = [], False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = not skip and arg in HYDRA_VALUE_FLAGS
            continue
        args.append(arg)
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        _refuse(f"{_first_line(err)} (the override syntax: https://hydra.cc/docs/advanced/override_grammar/basic)")
        return
    first = []
    for override in overrides:
        key = override.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        if override.is_sweep_override():
            try:
                value = next(iter(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - an interval (an optimising sweeper's): its values come later
                continue
            first.append(f"{key}={value}")
        else:
            first.append(override.input_line)
    try:
        from anomaly.config import compose

        compose("/tmp", first, config_name=config_name)
    except Exception as err:  # noqa: BLE001 - every composition failure is bad input
        _refuse(_explain(err, first, config_name))


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _explain(err: BaseException, overrides: list[str], config_name: str) -> str:
    import difflib
    import re

    text = str(err)
    found = re.search(r"Could not override '([^']+)'", text)
    if found:
        key = found.group(1)
        # a {…} value merges into the node: the key it lacks is deeper than the override's
        cause, deeper = err.__cause__, None
        while cause is not None and deeper is None:
            deeper = re.search(r"full_key: (\S+)", str(cause))
            cause = cause.__cause__
        if deeper and deeper.group(1).startswith(f"{key}."):
            return (f"{deeper.group(1)}: no such setting in {key} ({key}={{…}} merges into it; to replace it "
                    f"whole: '~{key}' '+{key}={{…}}')")
        known = [p for p in _setting_paths(overrides, config_name) if p.count(".") == key.count(".")]
        near = difflib.get_close_matches(key, known, n=2, cutoff=0.75)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        return f"{key}: no such setting{hint} (+{key}=… would add a key that nothing reads)"
    found = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if found:
        group, option = found.groups()
        from anomaly.provenance import CONF_DIR

        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        near = difflib.get_close_matches(option, options, n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        return f"{group}={option}: no such option{hint} (options: {', '.join(options)})"
    return _first_line(err)


def _setting_paths(overrides: list[str], config_name: str) -> list[str]:
    """Every setting's dotted path in the config the command line's group choices compose."""
    from anomaly.config import compose

    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and not o.startswith(("+", "~"))]
    try:
        cfg = compose("/tmp", groups, config_name=config_name)
    except Exception:  # noqa: BLE001 - then the defaults' settings
        cfg = compose("/tmp", [], config_name=config_name)
    paths: list[str] = []

    def walk(node, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            paths.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                walk(child, path + ".")

    walk(cfg, "")
    return paths


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)

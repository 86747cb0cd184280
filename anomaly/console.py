"""What a run shows on the terminal: the config tree, the results table, a prediction summary,
and `user_errors` (an `AnomalyError` as one `error:` line, exit 2). Everything shown also goes to
the run's log file (`anomaly.runlog`).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from anomaly import AnomalyError, runlog


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

    table = Table(title=f"{results['method']} · {results['dataset']} · {results['protocol']['name']} "
                        # class names, as the user writes them (COIL-100: object numbers, not positions)
                        f"normal {','.join(str(c) for c in results['protocol'].get('normal') or [])} "
                        f"· seed {results['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in (results.get("metrics") or {}).items():
        table.add_row(key, "—" if value is None else f"{value:.4f}")
    lines = [table]
    if results.get("problem"):
        lines.append(f"[yellow]note:[/] {results['problem']}")
    lines.append(f"run dir: {results['run_dir']}")
    console = Console()
    for line in lines:
        console.print(line, soft_wrap=isinstance(line, str))  # a path is never folded
    runlog.to_log("\n".join(runlog.render(line, 10_000 if isinstance(line, str) else 200) for line in lines))


def print_line(text: str) -> None:
    """One plain line on stdout (never folded: paths stay whole), and in the run's log."""
    print(text, flush=True)
    runlog.to_log(text)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an AnomalyError as one line and exit 2 (no traceback: the message says it all)."""
    try:
        yield
    except AnomalyError as err:
        runlog.error(str(err))
        sys.exit(2)

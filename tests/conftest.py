from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from anomaly.config import compose

from tests.helpers.formats import (write_brain_mri, write_coil100, write_emnist_letters, write_head_ct,
                                   write_mnist_like)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# a tiny, quiet, fast run (no figures: ~1 s of a small run; the tests of the figures set plots=true)
TINY = ["print_config=false", "trainer.enable_progress_bar=false", "data.batch_size=32", "plots=false"]


def compose_config(output_dir: Path, overrides: list[str] = (), config_name: str = "train") -> DictConfig:
    """The real config, composed as `python -m anomaly.<config_name> overrides…` would, writing to
    output_dir."""
    return compose(output_dir, overrides, config_name)


def refusal(output_dir: Path, overrides: list[str]) -> str:
    """The one line the config check refuses these train overrides with (anomaly.config_schema)."""
    from anomaly.config_schema import ConfigError, check_train

    with pytest.raises(ConfigError) as refused:
        check_train(compose_config(output_dir, overrides))
    return str(refused.value)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are tiny: intra-op threads only add synchronisation, and two OpenMP
    threads on a 2-core machine shared with other work stall on each other (measured: an
    end-to-end run took 7–16 s with two threads vs 0.7 s with one). Subprocess runs are not
    affected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_hydra_runtime_left():
    """Composing a config sets Hydra's process-wide runtime config (its group choices, which a
    run reads: `debug=fast` makes it a smoke run that is never kept); the next test on this worker
    must not run under the one a test before it composed."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


@pytest.fixture
def seeded_quiet():
    """torch seeded; Lightning's warning about self.log outside a Trainer silenced (tests that
    call a method's training_step directly)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        yield


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """Synthetic MNIST-format data (IDX files in torchvision's layout), 10 easy classes."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "MNIST", n_train_per_class=100, n_test_per_class=40)
    return root


@pytest.fixture(scope="session")
def every_dataset_root(tmp_path_factory) -> Path:
    """One data dir with every dataset a paper setup or table may name, in its real layout, tiny."""
    root = tmp_path_factory.mktemp("all_data")
    write_mnist_like(root, "MNIST", n_train_per_class=20, n_test_per_class=8)
    write_mnist_like(root, "FashionMNIST", n_train_per_class=20, n_test_per_class=8)
    write_emnist_letters(root, n_train_per_class=8, n_test_per_class=4)
    write_coil100(root, objects=range(1, 13), angles=range(0, 100, 5), size=32)
    write_head_ct(root)
    write_brain_mri(root)
    return root


# ---- the order the workers take the tests in ----------------------------------------------------
# The longest tests (measured by `pytest --durations`, 2 cores, 2026-12-07: 46 s to 6 s), started
# first: at the end of the queue they would keep one worker busy while the others idle. None of
# them uses a module-scoped fixture that another test of its module shares (moved out of their
# module, such a fixture would be set up twice). A name that no longer matches only loses the
# head start.
LONGEST = (
    "tests/test_reproduce.py::test_a_table_fans_its_trainings_out_and_a_sigterm_keeps_their_epochs",
    "tests/test_report.py::test_the_terminal_report_on_the_kept_results_leads_with_a_summary",
    "tests/test_cluster.py::test_submitit_sweep_with_a_failing_job",
    "tests/test_ddp.py::test_ddp_run_matches_one_process_and_writes_once",
    "tests/test_reproduce.py::test_the_device_script_runs_a_table_at_smoke_on_the_cpu",
    "tests/test_sweep.py::test_sweep_with_a_failing_job_then_report",
    "tests/test_cluster.py::test_requeued_slurm_job_resumes_from_its_last_epoch",
    "tests/test_cli.py::test_train_then_evaluate_from_the_command_line",
)


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by module- and session-scoped fixtures
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's worksteal scheduling (`make test`) each of the n workers first gets one
    n-th of the list, in order, then the idle ones take the far end of the busiest one's queue.
    So that every worker starts with long tests and the queues end with quick ones: the list is
    n parts, each the `LONGEST` tests its turn gives it, then its share of the other `slow` tests
    (whole modules: a module's shared fixtures set up once), then its share of
    the quick ones. Without xdist the order is pytest's own (as --failed-first leaves it)."""
    import os

    if "PYTEST_XDIST_WORKER_COUNT" not in os.environ:
        return
    workers = max(1, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    rank = {name: i for i, name in enumerate(LONGEST)}
    longest = sorted((item for item in items if item.nodeid in rank), key=lambda item: rank[item.nodeid])
    slow = [item for item in items if item.nodeid not in rank and item.get_closest_marker("slow")]
    quick = [item for item in items if item.nodeid not in rank and not item.get_closest_marker("slow")]
    parts: list[list] = [longest[w::workers] for w in range(workers)]
    # the other slow tests in whole modules (the largest first), each to the part with the fewest
    # tests so far
    modules: dict[str, list] = {}
    for item in slow:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    for module in sorted(modules.values(), key=len, reverse=True):
        min(parts, key=len).extend(module)
    # then the quick tests, filling each part up to the share worksteal gives its worker
    # (len(list) // n, then the rest's share)
    left = len(items)
    for w, part in enumerate(parts):
        share = left // (workers - w)
        take = max(0, share - len(part))
        part.extend(quick[:take])
        quick = quick[take:]
        left -= len(part)
    parts[-1].extend(quick)
    ordered = [item for part in parts for item in part]
    assert sorted(map(id, ordered)) == sorted(map(id, items))  # every test, once
    items[:] = ordered

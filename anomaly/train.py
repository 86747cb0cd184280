"""`python -m anomaly.train [overrides]`: train, threshold on validation, test, write results.

In a sweep (`-m`), a failing job records `status: failed` in its results.json and the other jobs
go on; Hydra exits non-zero when the sweep ends. A bad setting is refused before any work, in one
`error:` line (anomaly.config_schema).

For sweepers that optimise a returned value (Optuna: `hparams_search=optuna`), `main` returns the
validation split's `optimized_metric` (NaN where there is none, e.g. a failed job: Optuna records
the trial as failed and goes on). Never a test number: tuning on the test split would report a
selected maximum as a result.
"""

import math
import sys

import hydra
from omegaconf import DictConfig

from anomaly import config_schema, runlog
from anomaly.console import check_command_line, help_without
from anomaly.sweep import configure_job, job_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    runlog.setup()  # our warning filters, no Lightning tips; what the terminal shows goes to train.log too
    results: dict = {}
    with job_errors(cfg):
        # a refused setting before torch and Lightning load (only a method's own module is imported)
        config_schema.check_train(cfg)
        configure_job(cfg)
        from anomaly.pipeline import train  # here: `--help` and `--cfg job` answer without it

        results = train(cfg)
    return returned_value(results, cfg.optimized_metric)


def returned_value(results: dict, metric: str) -> float:
    """The validation metric a sweeper optimises (NaN where the run has none)."""
    value = (results.get("val_metrics") or {}).get(metric)
    return math.nan if value is None else float(value)


if __name__ == "__main__":
    runlog.install_warning_filters()  # before Hydra composes the config (it warns then too)
    check_command_line("train", sys.argv[1:])  # a bad key or option: one line, exit 2
    if {"--help", "-h"} & set(sys.argv[1:]):
        help_without(main, {"table"})  # the tables are anomaly.reproduce's
    else:
        main()

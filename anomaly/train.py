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

import hydra
from omegaconf import DictConfig

from anomaly import runlog
from anomaly.pipeline import train
from anomaly.sweep import configure_job, job_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    runlog.setup()  # our warning filters, no Lightning tips; what the terminal shows goes to train.log too
    results: dict = {}
    with job_errors(cfg):
        configure_job(cfg)
        results = train(cfg)
    return returned_value(results, cfg.optimized_metric)


def returned_value(results: dict, metric: str) -> float:
    """The validation metric a sweeper optimises (NaN where the run has none)."""
    value = (results.get("val_metrics") or {}).get(metric)
    return math.nan if value is None else float(value)


if __name__ == "__main__":
    runlog.install_warning_filters()  # before Hydra composes the config (it warns then too)
    main()

"""`python -m anomaly.train [overrides]`: train, threshold on validation, test, write results.

In a sweep (`-m`), a failing job records `status: failed` in its results.json and the other jobs
go on; Hydra exits non-zero when the sweep ends. A bad setting is refused before any work, in one
`error:` line (anomaly.config_schema).
"""

import hydra
from omegaconf import DictConfig

from anomaly import runlog
from anomaly.pipeline import train
from anomaly.sweep import configure_job, job_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    runlog.setup()  # our warning filters, no Lightning tips; what the terminal shows goes to train.log too
    results: dict = {}
    with job_errors(cfg):
        configure_job(cfg)
        results = train(cfg)
    # the test AUROC, for Hydra sweepers that optimise a returned value
    return (results.get("metrics") or {}).get("auroc")


if __name__ == "__main__":
    runlog.install_warning_filters()  # before Hydra composes the config (it warns then too)
    main()

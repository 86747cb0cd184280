"""`python -m anomaly.evaluate ckpt_path=…/last.ckpt`: re-score a checkpoint on its test split.

Takes the runtime keys of `anomaly.train` too (`threads`, the trainer, paths)."""

import hydra
from omegaconf import DictConfig

from anomaly import runlog
from anomaly.pipeline import evaluate, user_errors
from anomaly.sweep import configure_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    runlog.setup()  # no Lightning tips; what the terminal shows goes to evaluate.log too
    with user_errors():
        configure_job(cfg)
        evaluate(cfg)


if __name__ == "__main__":
    main()

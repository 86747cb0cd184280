"""`python -m anomaly.evaluate ckpt_path=…/last.ckpt`: re-score a checkpoint on its test split."""

import hydra
from omegaconf import DictConfig

from anomaly.pipeline import evaluate, user_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()

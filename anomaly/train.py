"""`python -m anomaly.train [overrides]`: train, threshold on validation, test, write results."""

import hydra
from omegaconf import DictConfig

from anomaly.pipeline import train, user_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        results = train(cfg)
    # the test AUROC, for Hydra sweepers that optimise a returned value
    return (results.get("metrics") or {}).get("auroc")


if __name__ == "__main__":
    main()

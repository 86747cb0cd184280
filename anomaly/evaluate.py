"""`python -m anomaly.evaluate ckpt_path=…/last.ckpt`: re-score a checkpoint on its test split.

`python -m anomaly.evaluate ckpt_path=…/last.ckpt predict_dir=path/to/images`: label images of no
split instead (predictions.csv in the run dir: file, score, anomalous = score > threshold).
Takes the runtime keys of `anomaly.train` too (`threads`, the trainer, paths). With `-m` over
several checkpoints, a failing one records `status: failed` in its job dir and the others go on."""

import sys

import hydra
from omegaconf import DictConfig

from anomaly import runlog
from anomaly.console import check_command_line
from anomaly.sweep import configure_job, job_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    runlog.setup()  # our warning filters, no Lightning tips; what the terminal shows goes to evaluate.log too
    with job_errors(cfg):  # in a sweep (-m), one failing checkpoint does not stop the others
        configure_job(cfg)
        from anomaly.rescore import evaluate  # here: `--help` and `--cfg job` answer without it

        evaluate(cfg)


if __name__ == "__main__":
    runlog.install_warning_filters()  # before Hydra composes the config (it warns then too)
    check_command_line("evaluate", sys.argv[1:])  # a bad key or option: one line, exit 2
    main()

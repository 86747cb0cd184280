"""`python -m anomaly.reproduce table=<name> [budget=…] [grid key=value …] [overrides]`;
`python -m anomaly.reproduce --list` lists the tables, their grids, budgets and estimated cost;
`python -m anomaly.reproduce --status [table=…]` says which kept results are stale (exit 1);
`python -m anomaly.reproduce --measure-flops table=…` counts its variants' training FLOPs (anomaly.reproduce.flops)."""

import sys

import hydra
from omegaconf import DictConfig

from anomaly import runlog
from anomaly.console import check_command_line
from anomaly.reproduce.cli import list_tables, run


@hydra.main(version_base="1.3", config_path="../../conf", config_name="reproduce")
def main(cfg: DictConfig) -> None:
    runlog.setup()  # no Lightning tips; what the terminal shows goes to the job's log too
    run(cfg)


if __name__ == "__main__":
    if "--list" in sys.argv[1:]:
        list_tables()
        sys.exit(0)
    if "--measure-flops" in sys.argv[1:]:
        from anomaly.console import user_errors
        from anomaly.reproduce.flops import main as measure

        runlog.setup()
        with user_errors():
            sys.exit(measure(sys.argv[1:]))
    if "--status" in sys.argv[1:]:
        from anomaly.reproduce.status import main as status

        sys.exit(status(sys.argv[1:]))
    runlog.install_warning_filters()  # before Hydra composes the config (it warns then too)
    check_command_line("reproduce", sys.argv[1:])  # a bad key or option: one line, exit 2
    main()

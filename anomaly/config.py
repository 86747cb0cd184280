"""Pure helpers on composed configs: composing one outside a Hydra app (`compose`), building
objects from them (`instantiate`) and the hash of what determines a run's result (`config_hash`).

No training, no files, no console: the pipeline, the loggers and `anomaly.reproduce` import
these without importing each other. (The validation of a config's settings is
`anomaly.config_schema`.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import hydra
import yaml
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf._utils import get_omega_conf_dumper

from anomaly import AnomalyError, provenance


def instantiate(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate that lets our own errors through unwrapped."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None:
            if isinstance(cause, AnomalyError):
                raise cause from None
            cause = cause.__cause__
        raise


def config_hash(cfg: DictConfig, identity: dict | None = None) -> str:
    """Hash of what determines the result: the settings, the trainer's schedule (max_epochs,
    batch limits, precision: a 1-epoch smoke checkpoint is not the same run as a 3-epoch one) and
    the topology when it is more than one process (`provenance.topology`; a one-process run keeps
    the hash it had before topologies were recorded); paths and run bookkeeping excluded.
    `identity`: `provenance.result_config(cfg)` where the caller has it already."""
    identity = dict(provenance.result_config(cfg) if identity is None else identity)
    if identity.get("topology", {}).get("world_size", 1) == 1:
        identity.pop("topology", None)
    # OmegaConf.to_yaml's own dump of the plain dict (bit for bit the text it gives, without
    # building a DictConfig first: a third of the time status spends per kept cell)
    text = yaml.dump(identity, default_flow_style=False, allow_unicode=True, sort_keys=False,
                     Dumper=get_omega_conf_dumper())
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def compose(output_dir: str | Path, overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The real config, composed as `python -m anomaly.<config_name> overrides…` composes it, for
    code that runs outside a Hydra app (tests, benchmarks, the published-code harnesses), writing
    to output_dir (`paths.output_dir` and `paths.log_dir`). Hydra's runtime config is set for what
    reads it (a run's command and choices) and left out of the returned config."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(provenance.CONF_DIR)):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.log_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


def method_name(cfg: DictConfig) -> str:
    """The `name` of the method class that cfg.method builds (without building it)."""
    return hydra.utils.get_class(cfg.method._target_).name

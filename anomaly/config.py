"""Pure helpers on composed configs: building objects from them (`instantiate`) and the hash of
what determines a run's result (`config_hash`).

No training, no files, no console: the pipeline, the loggers and `anomaly.reproduce` import
these without importing each other. (The validation of a config's settings is
`anomaly.config_schema`.)
"""

from __future__ import annotations

import hashlib
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

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


def config_hash(cfg: DictConfig) -> str:
    """Hash of what determines the result: the settings, the trainer's schedule (max_epochs,
    batch limits, precision: a 1-epoch smoke checkpoint is not the same run as a 3-epoch one) and
    the topology when it is more than one process (`provenance.topology`; a one-process run keeps
    the hash it had before topologies were recorded); paths and run bookkeeping excluded."""
    identity = provenance.result_config(cfg)
    if identity.get("topology", {}).get("world_size", 1) == 1:
        identity.pop("topology", None)
    text = OmegaConf.to_yaml(OmegaConf.create(identity))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def method_name(cfg: DictConfig) -> str:
    """The `name` of the method class that cfg.method builds (without building it)."""
    return hydra.utils.get_class(cfg.method._target_).name

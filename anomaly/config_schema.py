"""Every plain setting of a run config, checked when the config is composed, before any data loads.

`check_train(cfg)` and `check_evaluate(cfg)` run at the start of `anomaly.pipeline.train` /
`evaluate` (and in the entry points before `configure_job`). A bad value raises one
`ConfigError` (an `AnomalyError`: one `error:` line, exit 2) that names the key, the value and
what is allowed, e.g. `data.batch_size=0: must be an integer ≥ 1`; several bad values are named
in the same line.

One declaration per setting. The run's and the trainer's keys are tables here (RUN, TRAINER,
EVALUATE: config path → rule). A method's keys are its class's `__init__` signature: each
hyper-parameter a typed parameter with its default, its range in `typing.Annotated` where the
type is not enough (`nu: Annotated[float, Float(low=0, high=1, low_open=True)] = 0.1`,
`jacobian: Literal["generator", "encoder"] = "generator"`; anomaly/settings/rules.py has the rule
types and the shared ranges, anomaly/settings/signature.py reads them along the class's MRO). The
class is the one `method._target_` names (imported when a config names it), so a method of your
own gets its rules the same way; its `__init__` takes the values as given. Its network nodes'
keys (`method.encoder.widths`) are declared on its network parameters (`NetSpec`: the shared ones;
`Annotated[NetSpec, Net(hidden=Ints(low=1))]`: more). `method.lr` and any `method.*_lr` are
checked first, before the method's module (and torch) loads. A rule across keys is the class's
`check_config(cfg)` classmethod, called after the plain rules passed (f-AnoGAN's:
trainer.max_epochs must be method.gan_epochs + method.encoder_epochs, see
anomaly/methods/fanogan.py; `check_stage_epochs` below).

What is not here: settings whose check needs more than the value (a protocol's classes, a
threshold rule's settings, a network's widths against the image size, a method that needs
value_range=unit) stay with the code that builds them (protocols and threshold rules are built
before any data loads too; a method's networks once the image size is known). Keys absent from
a config are not checked.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf, read_write

from anomaly import AnomalyError
from anomaly.evaluation import METRIC_KEYS
from anomaly.settings.rules import (BETAS, LR, WIDTHS, Batches, Bool, BoolOrInt, Choice, Float, Floats, Int, Ints,
                                    Rule, is_int, is_number, non_negative, positive)
from anomaly.settings.signature import signature_rules

__all__ = ["BETAS", "LR", "WIDTHS", "Batches", "Bool", "BoolOrInt", "Choice", "ConfigError", "Float", "Floats",
           "Int", "Ints", "Rule", "check_evaluate", "check_keys", "check_stage_epochs", "check_train",
           "is_int", "is_number", "method_rules", "non_negative", "positive", "setting"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(AnomalyError):
    """A setting refused (here, when the config is composed; or by Lightning when the trainer is
    built, see anomaly.pipeline.build_trainer): nothing was trained, so a single run refused this
    way leaves no results.json for the report to count; a job of a sweep still records its
    failure (anomaly.sweep.job_errors)."""


# torch.nn.functional.interpolate's modes for images (anomaly.data.io resizes with them)
RESIZE_MODES = ("bilinear", "area", "bicubic", "nearest", "nearest-exact")

# ---- the tables ---------------------------------------------------------------------------------------
# the run's own keys (train; evaluate takes threads and the trainer)
RUN: dict[str, Rule] = {
    # Lightning's seed_everything takes 0 … 2³² − 1
    "seed": Int(low=0, high=2**32 - 1),
    "threads": Int(low=1, null="torch's default"),
    "print_config": Bool(),
    "plots": Bool(),
    "optimized_metric": Choice(options=tuple(k for k in METRIC_KEYS if k != "threshold")),
    "data.batch_size": Int(low=1),
    "data.eval_batch_size": Int(low=1, null="data.batch_size"),
    "data.num_workers": Int(low=0),
    "data.drop_last": Bool(),
    "data.images_on_device": Bool(),
    "dataset.image_size": Int(low=1, null="the images' own size"),
    "dataset.resize_mode": Choice(options=RESIZE_MODES),
    "dataset.loader.download": Bool(),
    # a compute budget in training FLOPs (anomaly.cost); absent: the whole schedule
    "compute.max_flops": positive(null="no budget: the whole schedule"),
}

TRAINER: dict[str, Rule] = {
    "trainer.max_epochs": Int(low=1),
    "trainer.min_epochs": Int(low=0, null="no minimum"),
    "trainer.max_steps": Int(low=1, special={-1: "no limit"}),
    "trainer.check_val_every_n_epoch": Int(low=1, null="validate by val_check_interval only"),
    "trainer.log_every_n_steps": Int(low=1),
    "trainer.num_sanity_val_steps": Int(low=0, special={-1: "all of them"}),
    "trainer.limit_train_batches": Batches(),
    "trainer.limit_val_batches": Batches(),
    "trainer.limit_test_batches": Batches(),
    "trainer.accumulate_grad_batches": Int(low=1),
    "trainer.num_nodes": Int(low=1),
    "trainer.fast_dev_run": BoolOrInt(),
    "trainer.deterministic": Bool(also=("warn",)),
    "trainer.inference_mode": Bool(),
    "trainer.enable_model_summary": Bool(),
    "trainer.enable_progress_bar": Bool(),
    "trainer.enable_checkpointing": Bool(),
    "trainer.sync_batchnorm": Bool(),
    "trainer.benchmark": Bool(null="torch's default"),
    "trainer.gradient_clip_val": non_negative(null="no clipping"),
}

EVALUATE: dict[str, Rule] = {
    "threads": RUN["threads"],
    "refit_threshold": Bool(),
}

# what `method.lr` and any `method.*_lr` take, whatever the method: checked before a method's module
# (and with it torch) loads; the rest of a method's keys are its class's signature (method_rules)
METHOD_COMMON: dict[str, Rule] = {"lr": LR}


# ---- a method's own rules and checks: on its class ------------------------------------------------------
def method_class(cfg: DictConfig) -> Any:
    """The class that cfg.method._target_ names, imported (a method's module loads only when a
    config names it); None where there is none or it does not import (instantiating the method
    says why, later)."""
    method = cfg.get("method")
    if not isinstance(method, DictConfig):
        return None
    module, _, name = str(method.get("_target_") or "").rpartition(".")
    if not module:
        return None
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:  # noqa: BLE001 - reported where the method is built
        return None


def method_rules(cfg: DictConfig, own: bool = True) -> dict[str, Rule]:
    """The rules of cfg.method's keys, by config path (method.lr, …): those the method class's
    `__init__` signatures declare (anomaly.settings.signature; `own=False`: without them, so
    without importing the method's module), METHOD_COMMON's, and a positive number for any other
    `*_lr` key."""
    method = cfg.get("method")
    if not isinstance(method, DictConfig):
        return {}
    rules = dict(METHOD_COMMON)
    if own:
        rules.update(signature_rules(method_class(cfg)))
    for key in method:
        if str(key).endswith("_lr") and key not in rules:
            rules[str(key)] = LR
    return {f"method.{k}": v for k, v in rules.items()}


# ---- checking -----------------------------------------------------------------------------------------
ABSENT = object()


def setting(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key` as plain Python; ABSENT when the key is not there, is ??? or
    cannot be resolved (its own error comes later, from the code that reads it)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent or OmegaConf.is_missing(parent, leaf):
        return ABSENT
    try:
        node = parent[leaf]
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is reported where it is read
        return ABSENT


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def problems(cfg: DictConfig, rules: Mapping[str, Rule]) -> list[str]:
    """`key=value: must be …` for every key of `rules` whose value the rule refuses."""
    found = []
    for key, rule in rules.items():
        value = setting(cfg, key)
        if value is ABSENT:
            continue
        allowed = rule.problem(value)
        if allowed is not None:
            found.append(f"{key}={_shown(value)}: must be {allowed}")
    return found


def _raise(found: Iterable[str]) -> None:
    found = list(found)
    if found:
        raise ConfigError("; ".join(found))


def check_keys(cfg: DictConfig, keys: Iterable[str]) -> None:
    """Check only these keys (e.g. `threads` before a job takes its share of the machine)."""
    every = {**RUN, **TRAINER, **EVALUATE}
    _raise(problems(cfg, {k: every[k] for k in keys}))


def check_train(cfg: DictConfig) -> None:
    """Every plain setting of a train config, then the method class's own `check_config(cfg)`
    where it has one (a rule across keys; it may fill in a setting, as f-AnoGAN's
    trainer.max_epochs). Raises one ConfigError naming every bad value."""
    # the run's, the trainer's and the settings every method shares first: refused within a
    # second, before a method's module (and with it torch and Lightning) loads for its own rules
    _raise(problems(cfg, {**RUN, **TRAINER, **method_rules(cfg, own=False)}))
    _raise(problems(cfg, method_rules(cfg)))
    check = getattr(method_class(cfg), "check_config", None)
    if check is not None:
        check(cfg)


def check_evaluate(cfg: DictConfig) -> None:
    """Every plain setting of an evaluate config (the checkpoint's run config was checked when it
    trained)."""
    _raise(problems(cfg, {**EVALUATE, **TRAINER}))


# ---- for the methods' own checks ---------------------------------------------------------------------
def max_epochs_was_set(cfg: DictConfig, epochs: int) -> bool:
    """Whether trainer.max_epochs was given (command line, sweep, or a config other than the trainer
    group's own) rather than left at the trainer config's default."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            if any(o.lstrip("+~").split("=", 1)[0] == "trainer.max_epochs" for o in hc.overrides.task):
                return True
            default = _trainer_default(hc.runtime.choices.get("trainer"), "max_epochs")
        else:
            default = _trainer_default("default", "max_epochs")
    except Exception:  # noqa: BLE001 - when in doubt, the value counts as the user's
        return True
    return default is None or epochs != default


def check_stage_epochs(cfg: DictConfig, method: str, first: str, second: str, first_min: int = 1) -> None:
    """trainer.max_epochs must be method.<first> + method.<second>, for a method that trains two
    stages in one run (f-AnoGAN, Deep SVDD; called from its `check_config`). Left at the trainer's
    default it becomes their sum (the run's config records the schedule it ran); set to anything
    else (the command line, or any config but the trainer group's own default) it is refused in one
    line that names the two keys and a split of it. `first_min`: the fewest epochs of the first stage."""
    a, b = setting(cfg, f"method.{first}"), setting(cfg, f"method.{second}")
    epochs = setting(cfg, "trainer.max_epochs")
    if not (is_int(a) and is_int(b) and is_int(epochs)) or epochs == a + b:
        return
    if not max_epochs_was_set(cfg, epochs):
        with read_write(cfg.trainer):
            cfg.trainer.max_epochs = a + b
        return
    if epochs >= first_min + 1:
        if a < epochs:  # keep a stage that fits, give the other the rest
            share = a
        elif first_min <= epochs - b and b < epochs:
            share = epochs - b
        else:
            share = min(max(round(epochs * a / (a + b)), first_min), epochs - 1)
        example = (f"e.g. method.{first}={share} method.{second}={epochs - share} for {epochs} "
                   f"epoch{'s' if epochs != 1 else ''}")
    elif first_min:
        example = (f"at least {first_min} and 1: method.{first}={first_min} method.{second}=1 "
                   f"trainer.max_epochs={first_min + 1}").replace("at least 1 and 1", "at least 1 each")
    else:
        example = f"at least 1: method.{first}=0 method.{second}=1 trainer.max_epochs=1"
    raise ConfigError(f"trainer.max_epochs={epochs} contradicts method={method}'s two stages, "
                      f"method.{first} + method.{second} = {a} + {b} = {a + b} epochs: set method.{first} and "
                      f"method.{second} instead ({example}); trainer.max_epochs follows their sum when you "
                      "leave it out")


def _trainer_default(option: str | None, key: str, depth: int = 0) -> Any:
    """`key` as conf/trainer/<option>.yaml sets it (following its defaults list); None if unknown."""
    path = CONF_DIR / "trainer" / f"{option}.yaml"
    if option is None or depth > 5 or not path.is_file():
        return None
    node = OmegaConf.load(path)
    if key in node:
        return node[key]
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            found = _trainer_default(entry, key, depth + 1)
            if found is not None:
                return found
    return None

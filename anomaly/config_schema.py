"""Every plain setting of a run config, checked when the config is composed, before any data loads.

Types and ranges are declared once, as tables keyed by config path (`data.batch_size: an
integer ≥ 1`); `check_train(cfg)` and `check_evaluate(cfg)` run at the start of
`anomaly.pipeline.train` / `evaluate` (and in the entry points before `configure_job`). A bad
value raises one `ConfigError` (an `AnomalyError`: one `error:` line, exit 2) that names the key,
the value and what is allowed, e.g. `data.batch_size=0: must be an integer ≥ 1`; several bad
values are named in the same line.

Here: the rule types, the run's and the trainer's keys, the method keys every method shares
(METHOD_COMMON: `latent_dim`, `lr` and `*_lr`, `*_widths`, …), and the mechanism. A method's own
keys are declared on its class, next to its code: `config_rules: dict[str, Rule]` (key under
`method.` → rule), read here from the class that `method._target_` names (imported when a config
names it); a rule across keys is the class's `check_config(cfg)` classmethod, called after the
plain rules passed (f-AnoGAN's: trainer.max_epochs must be method.gan_epochs +
method.encoder_epochs, see anomaly/methods/fanogan.py). So a method of your own (any
`method._target_`) gets the shared rules, plus its own where its class declares them.

What is not here: settings whose check needs more than the value (a protocol's classes, a
threshold rule's settings, a network's widths against the image size) stay with the code that
builds them (protocols and threshold rules are built before any data loads too; a method's
networks once the image size is known), and so do the string choices the methods check
themselves (`method.attack`, …). Keys absent from a config are not checked. The settings of a
method's network nodes (`method.encoder.widths`, anomaly/nets/build.py) are rules by their path
too; a net checks the rest when it is built.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf, read_write

from anomaly import AnomalyError
from anomaly.evaluation import METRIC_KEYS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(AnomalyError):
    """A setting refused (here, when the config is composed; or by Lightning when the trainer is
    built, see anomaly.pipeline.build_trainer): nothing was trained, so a single run refused this
    way leaves no results.json for the report to count; a job of a sweep still records its
    failure (anomaly.sweep.job_errors)."""


# ---- rules ----------------------------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(x: float) -> str:
    return str(x) if is_int(x) else f"{x:g}"


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '≥'} {_number(low)}"
    if high is not None:
        return f"{'<' if high_open else '≤'} {_number(high)}"
    return ""


def _within(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and not (value > low if low_open else value >= low):
        return False
    if high is not None and not (value < high if high_open else value <= high):
        return False
    return True


@dataclass(frozen=True)
class Rule:
    """What a key takes. `null`: where null is allowed, what it means (None: not allowed)."""

    null: str | None = None

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        """None when `value` is allowed, else what is allowed ("an integer ≥ 1, or null (…)")."""
        if value is None and self.null is not None:
            return None
        if value is not None and self.ok(value):
            return None
        return self.describe() + (f", or null ({self.null})" if self.null is not None else "")


@dataclass(frozen=True)
class Int(Rule):
    low: int | None = None
    high: int | None = None
    # further values with a meaning of their own: {-1: "no limit"}
    special: Mapping[int, str] = field(default_factory=dict)

    def ok(self, value: Any) -> bool:
        return is_int(value) and (value in self.special or _within(value, self.low, self.high, False, False))

    def describe(self) -> str:
        bounds = _bounds(self.low, self.high, False, False)
        text = "an integer" + (f" {bounds}" if bounds else "")
        return text + "".join(f", or {k} ({v})" for k, v in self.special.items())


@dataclass(frozen=True)
class Float(Rule):
    """A finite number (an integer is one too) in the given range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def ok(self, value: Any) -> bool:
        return is_number(value) and _within(value, self.low, self.high, self.low_open, self.high_open)

    def describe(self) -> str:
        bounds = _bounds(self.low, self.high, self.low_open, self.high_open)
        return "a number" + (f" {bounds}" if bounds else "")


def positive(null: str | None = None) -> Float:
    return Float(null=null, low=0, low_open=True)


def non_negative(null: str | None = None) -> Float:
    return Float(null=null, low=0)


@dataclass(frozen=True)
class Bool(Rule):
    also: tuple[str, ...] = ()  # strings with a meaning of their own ("warn")

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool) or value in self.also

    def describe(self) -> str:
        return "true or false" + "".join(f" or {a}" for a in self.also)


@dataclass(frozen=True)
class Choice(Rule):
    options: tuple[str, ...] = ()

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(self.options)


@dataclass(frozen=True)
class Ints(Rule):
    """A list of integers ≥ low (of `length` items where given)."""

    low: int = 1
    length: int | None = None

    def ok(self, value: Any) -> bool:
        return (isinstance(value, list) and (self.length is None or len(value) == self.length)
                and all(is_int(v) and v >= self.low for v in value))

    def describe(self) -> str:
        count = f"{self.length} " if self.length is not None else ""
        return f"a list of {count}integers ≥ {self.low}"


@dataclass(frozen=True)
class Floats(Rule):
    """A list of `length` numbers in the given range."""

    length: int = 2
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def ok(self, value: Any) -> bool:
        return (isinstance(value, list) and len(value) == self.length
                and all(is_number(v) and _within(v, self.low, self.high, self.low_open, self.high_open)
                        for v in value))

    def describe(self) -> str:
        return f"a list of {self.length} numbers {_bounds(self.low, self.high, self.low_open, self.high_open)}"


@dataclass(frozen=True)
class Batches(Rule):
    """Lightning's limit_*_batches: a number of batches or a share of them."""

    def ok(self, value: Any) -> bool:
        return (is_int(value) and value >= 0) or (is_number(value) and 0.0 <= value <= 1.0)

    def describe(self) -> str:
        return "an integer ≥ 0 (batches) or a number in [0, 1] (a share of them)"


@dataclass(frozen=True)
class BoolOrInt(Rule):
    """Lightning's fast_dev_run: true/false or a number of batches."""

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool) or (is_int(value) and value >= 0)

    def describe(self) -> str:
        return "true, false or an integer ≥ 0 (batches)"


# torch.nn.functional.interpolate's modes for images (anomaly.data.io resizes with them)
RESIZE_MODES = ("bilinear", "area", "bicubic", "nearest", "nearest-exact")

# ---- the tables ---------------------------------------------------------------------------------------
LR = positive()
BETAS = Floats(length=2, low=0, high=1, high_open=True)
WIDTHS = Ints(low=1, null="the default widths")

# the run's own keys (train; evaluate takes threads and the trainer)
RUN: dict[str, Rule] = {
    # Lightning's seed_everything takes 0 … 2³² − 1
    "seed": Int(low=0, high=2**32 - 1),
    "threads": Int(low=1, null="torch's default"),
    "print_config": Bool(),
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

# keys that mean the same in every method (and in a method of your own); a method's own keys are
# its class's `config_rules` (see method_rules)
METHOD_COMMON: dict[str, Rule] = {
    "latent_dim": Int(low=1),
    "lr": LR,
    "betas": BETAS,
    "encoder_widths": WIDTHS,
    "decoder_widths": WIDTHS,
    "generator_widths": WIDTHS,
    "discriminator_widths": WIDTHS,
    "critic_widths": WIDTHS,
    "base_width": Int(low=1),
    "top_width": Int(low=1),
    "batch_norm": Bool(),
    "noise_std": non_negative(),
    "weight_decay": non_negative(),
    # the settings of injected networks (anomaly/nets/build.py) that mean the same in every slot
    **{f"{slot}.{key}": rule for slot in ("encoder", "decoder", "generator", "discriminator", "critic")
       for key, rule in (("widths", WIDTHS), ("base_width", Int(low=1)), ("top_width", Int(low=1)),
                         ("batch_norm", Bool()), ("out_features", Int(low=1)))},
}


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
    """The rules of cfg.method's keys, by config path (method.lr, …): METHOD_COMMON, the method
    class's own `config_rules` (a dict key → Rule; none where the class has none; `own=False`:
    without them, so without importing the method's module), and a positive number for any other
    `*_lr` key."""
    method = cfg.get("method")
    if not isinstance(method, DictConfig):
        return {}
    rules = dict(METHOD_COMMON)
    if own:
        rules.update(getattr(method_class(cfg), "config_rules", None) or {})
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

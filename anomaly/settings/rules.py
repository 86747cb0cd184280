"""What a setting takes: the rule types, and the names of the ranges the methods share.

A rule checks one value and says what is allowed (`an integer ≥ 1, or null (…)`) in the line a
refused setting gets (anomaly.config_schema). A method declares its settings in its `__init__`
signature (anomaly.settings.signature reads them): a plain type implies its rule (`int` → Int(),
`float` → Float(), `bool` → Bool(), `Literal[...]` → Choice, `X | None` → null allowed), and
`typing.Annotated` gives a range where the type is not enough:

    nu: Annotated[float, Float(low=0, high=1, low_open=True)] = 0.1

The aliases at the end name the ranges several methods use (`LearningRate`, `LatentDim`,
`Milestones`, …), each declared once here. `Net(...)` on an injected network's parameter
(`anomaly.nets.build.NetSpec` carries `Net()`) declares the settings of that config node
(`method.encoder.widths`). No torch here: the settings are checked before it loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Mapping, Sequence


# ---- the rule types -------------------------------------------------------------------------------
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


# ---- an injected network's settings --------------------------------------------------------------------
WIDTHS = Ints(low=1, null="the default widths")

# what the settings of a network node mean in every slot (method.encoder.widths, …)
NET_COMMON: dict[str, Rule] = {"widths": WIDTHS, "base_width": Int(low=1), "top_width": Int(low=1),
                               "batch_norm": Bool(), "out_features": Int(low=1)}


class Net:
    """The metadata of an injected network's parameter: the rules of its config node's keys (the
    ones of NET_COMMON, and those given: `Net(hidden=Ints(low=1))`), read as `method.<slot>.<key>`."""

    def __init__(self, **rules: Rule) -> None:
        self.rules: dict[str, Rule] = rules

    def __repr__(self) -> str:
        return f"Net({', '.join(self.rules)})"


# ---- the shared ranges, by name ---------------------------------------------------------------------------
LR = positive()
BETAS = Floats(length=2, low=0, high=1, high_open=True)
FRACTION = Float(low=0, high=1, high_open=True)  # a dropout rate, a leaky slope

Positive = Annotated[float, positive()]
NonNegative = Annotated[float, non_negative()]
LearningRate = Annotated[float, LR]
Betas = Annotated[Sequence[float], BETAS]
LatentDim = Annotated[int, Int(low=1)]
Count = Annotated[int, Int(low=0)]  # steps, epochs that may be none
AtLeastOne = Annotated[int, Int(low=1)]
Milestones = Annotated[Sequence[int], Ints(low=1)]  # epochs at which a learning rate drops
Nu = Annotated[float, Float(low=0, high=1, low_open=True)]  # ν of a one-class SVM objective

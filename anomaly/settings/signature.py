"""A class's settings, read from its `__init__` signatures: the one place a method declares them.

Each parameter with a default is a setting under `method.`: its annotation gives the rule
(anomaly.settings.rules: a plain `int`, `float`, `bool`, `Literal[...]` or `X | None` implies
one; `Annotated[T, rule]` gives it), read along the class's MRO so a method gets its base's
(`value_range` of AnomalyModule) and a subclass's own declaration of a name wins. A network's
parameter (`NetSpec`, metadata `Net(...)`) gives the rules of its config node's keys
(`encoder.widths`). A parameter without an annotation, with one that implies nothing (`str`, a
sequence without a rule, `Any`) or with one that does not resolve, is not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Annotated, Any, Literal, Union

from anomaly.settings.rules import NET_COMMON, Bool, Choice, Float, Int, Net, Rule

IMPLIED: dict[type, Rule] = {bool: Bool(), int: Int(), float: Float()}


def _without_none(hint: Any) -> tuple[Any, bool]:
    """(the hint without None, whether None was allowed)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = typing.get_args(hint)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else Union[rest]), True
    return hint, False


def hint_rules(hint: Any) -> dict[str, Rule]:
    """The rules one annotation declares: "" → the parameter's own; "<key>" → a key of its
    network node (Net metadata)."""
    hint, nullable = _without_none(hint)
    meta: tuple[Any, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *more = typing.get_args(hint)
        meta = tuple(more)
        hint, inner_nullable = _without_none(hint)
        nullable = nullable or inner_nullable
    nets = [m for m in meta if isinstance(m, Net)]
    if nets:
        return {key: rule for net in nets for key, rule in {**NET_COMMON, **net.rules}.items()}
    given = [m for m in meta if isinstance(m, Rule)]
    if given:
        rule = given[-1]
    elif typing.get_origin(hint) is Literal:
        rule = Choice(options=tuple(str(a) for a in typing.get_args(hint)))
    elif isinstance(hint, type) and hint in IMPLIED:
        rule = IMPLIED[hint]
    else:
        return {}
    if nullable and rule.null is None:
        rule = dataclasses.replace(rule, null="none")
    return {"": rule}


def _hints(init: Any) -> dict[str, Any]:
    """The annotations of `init`, resolved; where they do not all resolve, each one that does."""
    try:
        return typing.get_type_hints(init, include_extras=True)
    except Exception:  # noqa: BLE001 - a name only a type checker sees: the others still declare
        hints = {}
        for name, hint in getattr(init, "__annotations__", {}).items():
            try:
                hints[name] = eval(hint, init.__globals__) if isinstance(hint, str) else hint  # noqa: S307
            except Exception:  # noqa: BLE001
                continue
        return hints


@functools.lru_cache(maxsize=None)
def signature_rules(cls: Any) -> dict[str, Rule]:
    """Key (relative to the config node the class is built from: `nu`, `encoder.widths`) → rule,
    from the `__init__` of `cls` and of every class it derives from. {} for what is no class."""
    if not isinstance(cls, type):
        return {}
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if not inspect.isfunction(init):
            continue
        hints = _hints(init)
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for param in parameters:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name not in hints:
                continue
            for key, rule in hint_rules(hints[param.name]).items():
                rules[f"{param.name}.{key}" if key else param.name] = rule
    return rules

"""How a method builds the networks its config injects.

A method's config names each of its networks as a node (conf/method/<m>.yaml, e.g. GPND's
`encoder: {_target_: anomaly.nets.ConvEncoder, _partial_: true, widths: [64, 256, 512]}`): the
node holds the class and its own settings; the method adds what it knows by keyword (the image
shape, the latent size…). The keywords, by role:

- a network on images (an encoder, a discriminator): `image_shape` (C, H, W), and
  `out_features` where the method decides the output size (GPND's latent, a discriminator's 1);
- a network to images (a decoder, a generator): `in_features`, `image_shape`;
- a network on vectors (a latent discriminator): `in_features`, `out_features`.

Any class that takes those keywords fits; `build_net` refuses one that does not in one line, and
`output_shape` lets the method check what a network gives before any training.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Callable, Mapping, Sequence

import torch
from torch import nn

from anomaly import AnomalyError
from anomaly.settings.rules import Net

# a method's network parameter; its config node's keys (method.encoder.widths) are checked by the
# shared rules (anomaly.settings.rules.NET_COMMON), more with Annotated[NetSpec, Net(key=rule)]
NetSpec = Annotated[Mapping[str, Any] | Callable[..., nn.Module], Net()]


def target_name(spec: NetSpec) -> str:
    """The class (or callable) a net spec names, for messages."""
    if isinstance(spec, Mapping):
        return str(spec.get("_target_"))
    func = spec.func if isinstance(spec, functools.partial) else spec
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def build_net(spec: NetSpec, slot: str, method: str, **known: Any) -> nn.Module:
    """The network of `spec` (a config node with `_target_`, a partial or a class) built with the
    method's `known` keywords; a network that does not take them, or is no nn.Module, refused in
    one line naming `method.<slot>`."""
    if isinstance(spec, Mapping):
        if "_target_" not in spec:
            raise AnomalyError(f"method={method}: method.{slot} needs a _target_ (a class of anomaly.nets or "
                               f"your own), e.g. method.{slot}._target_=anomaly.nets.ConvEncoder")
        from hydra.utils import instantiate

        factory = instantiate(spec, _partial_=True)
    else:
        factory = spec
    try:
        net = factory(**known)
    except TypeError as err:
        given = ", ".join(known)
        raise AnomalyError(f"method={method}: method.{slot}={target_name(spec)} does not take what the "
                           f"method builds it with ({given}): {err}") from None
    if not isinstance(net, nn.Module):
        raise AnomalyError(f"method={method}: method.{slot}={target_name(spec)} built a {type(net).__name__}, "
                           "not a torch nn.Module")
    return net


def output_shape(net: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of one sample's output for one zero input of `input_shape` (in eval mode, without
    gradients: no BatchNorm statistics move, no random numbers are drawn; every module's mode is
    restored after)."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, *(int(s) for s in input_shape)))
    finally:
        for m, training in modes:
            m.training = training
    return tuple(out.shape[1:])


def expect_output(net: nn.Module, slot: str, method: str, input_shape: Sequence[int],
                  wanted: Sequence[int], what: str) -> None:
    """Refuse, in one line, a network whose output for `input_shape` inputs is not `wanted`."""
    try:
        got = output_shape(net, input_shape)
    except RuntimeError as err:  # a layer that cannot take the input
        raise AnomalyError(f"method={method}: method.{slot}={type(net).__name__} cannot take inputs of "
                           f"{_shape(input_shape)}: {str(err).splitlines()[0]}") from None
    if tuple(got) != tuple(int(s) for s in wanted):
        raise AnomalyError(f"method={method}: method.{slot}={type(net).__name__} gives {_shape(got)} for "
                           f"inputs of {_shape(input_shape)}; it needs {_shape(wanted)} ({what})")


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape) or "a scalar"

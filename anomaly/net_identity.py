"""A run's identity over its networks: injected default nets keep the hash they had as flat keys.

Methods take their networks as `_target_` nodes (`method.encoder: {_target_:
anomaly.nets.ConvEncoder, _partial_: true, widths: […]}`, see anomaly/nets/build.py). Before,
they took flat keys (`method.encoder_widths: […]`), and every kept result records its config and
hash in that form. The identity (`provenance.result_config`: the config hash, results.json's
`config`, `python -m anomaly.reproduce --status`) is over what changes the numbers, so:

    A method's net nodes that build what its flat keys built (each node's class is the one the
    method built for that slot, and every setting in it is one a flat key set) are written in the
    identity as those flat keys, in the method's former key order. Anything else (another class,
    a setting no flat key had) stays a node, and so makes another hash.

So a default run, or one that sets `method.encoder.widths=[…]` (formerly
`method.encoder_widths=[…]`), keeps its hash and its kept results; a swapped backbone does not.

`FLAT` below is the whole rule's data: per method class, its former key order and, per net
slot, for each class it built there, the flat key each node setting was (or the value a flat
key had that the node no longer carries), and the method keys that came with the nodes (AE's
`init`). It records history: a method added after nets were injected has no entry and needs none
(its nodes are its identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Const:
    """A flat key whose value this class of net implies (e.g. AE's `net: conv`)."""

    value: Any


@dataclass(frozen=True)
class Reversed:
    """A flat key whose value is this node setting reversed (ARAE's decoder mirrors `hidden`)."""

    setting: str


@dataclass(frozen=True)
class Flat:
    """A method's former flat form: `order` its config's keys as its YAML had them; `slots`: net
    slot → class it built there → {flat key: the node's setting (str), Reversed or a Const}."""

    order: tuple[str, ...]
    slots: dict[str, dict[str, dict[str, str | Reversed | Const]]] = field(default_factory=dict)
    # a method key the flat form did not have, left out where its value is the one a flat key's
    # value implied (AE's `init: dcgan` with `net: conv`): {key: (flat key, {flat value: value})}
    implied: dict[str, tuple[str, dict[Any, Any]]] = field(default_factory=dict)
    # node forms whose flat form would name another network than they build (kept as nodes)
    ambiguous: Callable[[dict[str, Any]], bool] | None = None


CONV_ENCODER, CONV_DECODER = "anomaly.nets.ConvEncoder", "anomaly.nets.ConvDecoder"


def _ae_decoder_not_mirrored(method: dict[str, Any]) -> bool:
    """AE's MLP: `decoder_widths: null` mirrored the encoder's widths; `decoder.hidden: null` is
    256, 512 whatever the encoder's, so the two agree only where the encoder's are 512, 256."""
    encoder, decoder = method.get("encoder") or {}, method.get("decoder") or {}
    return (same_class("anomaly.nets.DenseDecoder", str(decoder.get("_target_"))) and decoder.get("hidden") is None
            and encoder.get("hidden") not in (None, [512, 256]))

ADAE_NET = {"anomaly.nets.ConvAutoencoder": {k: k for k in ("encoder_widths", "decoder_widths", "base_width",
                                                               "batch_norm", "negative_slope")}}

VAE_NET = {"width": "width", "hidden": "hidden", "dropout": "dropout"}

ARAE_FLAT = {"net": "mlp", "hidden": [512, 256], "activation": "sigmoid", "encoder_widths": None,
             "decoder_widths": None, "base_width": 32, "batch_norm": True}  # each net's unused keys

FLAT: dict[str, Flat] = {
    "anomaly.methods.arae.ARAE": Flat(
        order=("_target_", "net", "latent_dim", "hidden", "activation", "output", "encoder_widths", "decoder_widths",
               "base_width", "batch_norm", "attack", "eps", "steps", "alpha", "latent_weight", "union_combine",
               "union_latent_weight", "union_l2_eps", "union_l2_alpha", "union_l2_steps", "union_linf_eps",
               "union_linf_alpha", "union_linf_steps", "union_max_rotation", "union_rotations", "union_max_shift",
               "union_shifts", "union_transform_chunk", "lr", "value_range"),
        slots={"encoder": {"anomaly.nets.DenseEncoder": {"net": Const("mlp"), "hidden": "hidden",
                                                         "activation": "activation",
                                                         **{k: Const(ARAE_FLAT[k]) for k in ("encoder_widths",
                                                            "decoder_widths", "base_width", "batch_norm")}},
                           CONV_ENCODER: {"net": Const("conv"), "encoder_widths": "widths", "base_width": "base_width",
                                          "batch_norm": "batch_norm", "hidden": Const([512, 256]),
                                          "activation": Const("sigmoid")}},
               "decoder": {"anomaly.nets.DenseDecoder": {"net": Const("mlp"), "hidden": Reversed("hidden"),
                                                         "activation": "activation", "output": "output",
                                                         "decoder_widths": Const(None)},
                           CONV_DECODER: {"net": Const("conv"), "decoder_widths": "widths", "base_width": "base_width",
                                          "batch_norm": "batch_norm", "output": "output"}}},
        implied={"init": ("net", {"conv": "dcgan", "mlp": "none"})}),
    "anomaly.methods.geom.GEOM": Flat(
        order=("_target_", "depth", "widen_factor", "dropout", "translation", "pad", "lr", "betas", "eps",
               "weight_decay", "score", "score_chunk", "value_range"),
        slots={"net": {"anomaly.nets.WideResNet": {k: k for k in ("depth", "widen_factor", "dropout")}}}),
    "anomaly.methods.anogan.AnoGAN": Flat(
        order=("_target_", "latent_dim", "generator_widths", "discriminator_widths", "top_width", "lr", "betas",
               "generator_steps", "search_steps", "search_lr", "search_betas", "feature_weight", "search_seed",
               "fit_validation", "value_range"),
        slots={"generator": {"anomaly.nets.DCGANGenerator": {"generator_widths": "widths", "top_width": "top_width"}},
               "discriminator": {"anomaly.nets.DCGANDiscriminator": {"discriminator_widths": "widths",
                                                                     "top_width": "top_width"}}}),
    "anomaly.methods.fanogan.FAnoGAN": Flat(
        order=("_target_", "latent_dim", "prior", "generator_widths", "critic_widths", "encoder_widths", "top_width",
               "critic_norm", "gan_epochs", "encoder_epochs", "critic_steps", "gradient_penalty_weight", "lr",
               "betas", "encoder_optimizer", "encoder_lr", "feature_weight", "value_range"),
        slots={"generator": {"anomaly.nets.DCGANGenerator": {"generator_widths": "widths", "top_width": "top_width"}},
               "critic": {"anomaly.nets.DCGANDiscriminator": {"critic_widths": "widths", "top_width": "top_width",
                                                              "critic_norm": "norm"}},
               "encoder": {"anomaly.nets.DCGANEncoder": {"encoder_widths": "widths", "top_width": "top_width",
                                                         "critic_norm": "norm"}}}),
    "anomaly.methods.vae.VAE": Flat(
        order=("_target_", "latent_dim", "width", "hidden", "l2", "dropout", "lr", "score", "score_samples",
               "value_range"),
        slots={"encoder": {"anomaly.nets.VAEEncoder": VAE_NET}, "decoder": {"anomaly.nets.VAEDecoder": VAE_NET}}),
    "anomaly.methods.adae.ADAE": Flat(
        order=("_target_", "latent_dim", "encoder_widths", "decoder_widths", "base_width", "batch_norm",
               "negative_slope", "variant", "lr", "betas", "value_range"),
        slots={"generator": ADAE_NET, "discriminator": ADAE_NET}),
    "anomaly.methods.gpnd.GPND": Flat(
        order=("_target_", "latent_dim", "encoder_widths", "generator_widths", "discriminator_widths",
               "latent_discriminator_hidden", "lr", "betas", "lr_milestones", "lr_gamma",
               "reconstruction_weight", "latent_adversarial_weight", "generator_output", "batchnorm_init",
               "reuse_forward_passes", "jacobian", "jacobian_chunk", "residual_bins", "perp_dim_factor",
               "value_range"),
        slots={"encoder": {CONV_ENCODER: {"encoder_widths": "widths"}},
               "generator": {CONV_DECODER: {"generator_widths": "widths", "generator_output": "output"}},
               "discriminator": {CONV_ENCODER: {"discriminator_widths": "widths"}},
               "latent_discriminator": {"anomaly.nets.MLP": {"latent_discriminator_hidden": "hidden"}}}),
    "anomaly.methods.deep_svdd.DeepSVDD": Flat(
        order=("_target_", "objective", "nu", "warm_up_epochs", "center_eps", "preprocessing",
               "encoder_widths", "rep_dim", "pretrain_epochs", "svdd_epochs", "lr", "weight_decay",
               "lr_milestones", "ae_lr", "ae_weight_decay", "ae_lr_milestones", "value_range"),
        slots={"encoder": {"anomaly.nets.LeNetEncoder": {"encoder_widths": "widths", "rep_dim": "rep_dim"}},
               "decoder": {"anomaly.nets.LeNetDecoder": {"encoder_widths": "widths"}}}),
    "anomaly.methods.ae.Autoencoder": Flat(
        order=("_target_", "net", "latent_dim", "encoder_widths", "decoder_widths", "base_width",
               "batch_norm", "noise_std", "lr", "weight_decay", "value_range"),
        slots={"encoder": {CONV_ENCODER: {"net": Const("conv"), "encoder_widths": "widths",
                                          "base_width": "base_width", "batch_norm": "batch_norm"},
                           "anomaly.nets.DenseEncoder": {"net": Const("mlp"), "encoder_widths": "hidden",
                                                         "base_width": Const(32), "batch_norm": Const(True)}},
               "decoder": {CONV_DECODER: {"net": Const("conv"), "decoder_widths": "widths",
                                          "base_width": "base_width", "batch_norm": "batch_norm"},
                           "anomaly.nets.DenseDecoder": {"net": Const("mlp"), "decoder_widths": "hidden",
                                                         "base_width": Const(32), "batch_norm": Const(True)}}},
        implied={"init": ("net", {"conv": "dcgan", "mlp": "none"})}, ambiguous=_ae_decoder_not_mirrored),
}

NODE_KEYS = ("_target_", "_partial_")


def same_class(a: str, b: str) -> bool:
    """Two `_target_`s of one class: equal, or one names it from a package the other's module is
    in (anomaly.nets.ConvEncoder, anomaly.nets.conv.ConvEncoder)."""
    (pa, _, ca), (pb, _, cb) = a.rpartition("."), b.rpartition(".")
    return ca == cb and (pa == pb or pa.startswith(pb + ".") or pb.startswith(pa + "."))


_UNSET = object()


def flat_method(method: dict[str, Any]) -> dict[str, Any]:
    """The method's resolved config as its identity writes it (see the module docstring)."""
    form = FLAT.get(str(method.get("_target_")))
    if form is None or (form.ambiguous is not None and form.ambiguous(method)):
        return method
    values: dict[str, Any] = {}
    for slot, classes in form.slots.items():
        node = method.get(slot)
        if not isinstance(node, dict):
            return method
        keys = next((v for k, v in classes.items() if same_class(k, str(node.get("_target_")))), None)
        if keys is None or node.get("_partial_", True) is not True:
            return method
        settings = {k: v for k, v in node.items() if k not in NODE_KEYS}
        if set(settings) - {v.setting if isinstance(v, Reversed) else v for v in keys.values()
                            if isinstance(v, (str, Reversed))}:
            return method  # a setting no flat key had
        for flat, source in keys.items():
            if isinstance(source, Const):
                value = source.value
            elif isinstance(source, Reversed):
                value = settings.get(source.setting)
                value = value[::-1] if isinstance(value, list) else value
            else:
                value = settings.get(source)
            if values.get(flat, value) != value:  # two nodes that no flat key could have set alike
                return method
            values[flat] = value
    for key, (flat, implied) in form.implied.items():
        if key in method and implied.get(values.get(flat), _UNSET) != method[key]:
            return method
    rest = {k: v for k, v in method.items() if k not in form.slots and k not in form.implied}
    out = {k: (values[k] if k in values else rest[k]) for k in form.order if k in values or k in rest}
    out.update((k, v) for k, v in rest.items() if k not in out)
    return out

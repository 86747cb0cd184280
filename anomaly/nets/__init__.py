"""Networks, kept apart from the optimisation so that methods share them."""

from anomaly.nets.conv import ConvDecoder, ConvEncoder, dcgan_init, num_scales
from anomaly.nets.mlp import MLP, frozen

__all__ = ["ConvEncoder", "ConvDecoder", "MLP", "dcgan_init", "frozen", "num_scales"]

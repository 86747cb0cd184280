"""Networks, kept apart from the optimisation so that methods share them."""

from anomaly.nets.conv import ConvDecoder, ConvEncoder, dcgan_init, num_scales

__all__ = ["ConvEncoder", "ConvDecoder", "dcgan_init", "num_scales"]

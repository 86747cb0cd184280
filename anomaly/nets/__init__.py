"""Networks, kept apart from the optimisation so that methods share them."""

from anomaly.nets.conv import ConvAutoencoder, ConvDecoder, ConvEncoder, dcgan_init, num_scales
from anomaly.nets.dcgan import (DCGANDiscriminator, DCGANEncoder, DCGANGenerator, dcgan_stages,
                                frozen_inference)
from anomaly.nets.dense import DenseDecoder, DenseEncoder, glorot_init
from anomaly.nets.lenet import LeNetDecoder, LeNetEncoder
from anomaly.nets.mlp import MLP, frozen
from anomaly.nets.vae import VAEDecoder, VAEEncoder, keras_init
from anomaly.nets.wrn import WideResNet

__all__ = ["ConvEncoder", "ConvDecoder", "ConvAutoencoder", "DenseEncoder", "DenseDecoder", "MLP",
           "dcgan_init", "frozen", "glorot_init", "num_scales", "DCGANGenerator", "DCGANDiscriminator",
           "DCGANEncoder", "dcgan_stages", "frozen_inference", "VAEEncoder", "VAEDecoder", "keras_init",
           "LeNetEncoder", "LeNetDecoder", "WideResNet"]

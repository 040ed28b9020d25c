"""Encoder networks behind one registry and one contract (see :mod:`innerssl.networks.encoder`)."""

from innerssl.networks.encoder import EncoderSpec, create_encoder, encoder_names
from innerssl.networks.registry import ENCODERS

__all__ = ["ENCODERS", "EncoderSpec", "create_encoder", "encoder_names"]

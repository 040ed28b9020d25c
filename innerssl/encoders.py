"""Compatibility names: the encoders live in :mod:`innerssl.networks` (one registry, one contract)."""

from innerssl.networks import ENCODERS, EncoderSpec, create_encoder, encoder_names

__all__ = ["ENCODERS", "EncoderSpec", "create_encoder", "encoder_names"]

"""The encoder registry: plain names (``resnet50``) and families resolved by prefix (``timm:<model>``).

An entry is a factory ``(spec: EncoderSpec) -> nn.Module`` returning a module that follows the encoder
contract of :mod:`innerssl.networks.encoder`. Entries register themselves in their own module under
``innerssl/networks/``; users register theirs with ``@ENCODERS.register("name")`` in a ``--config_module``.
A family is registered under its prefix ending in ``:`` (``timm:``, ``monai:``) and gets the whole spec, whose
name carries the model after the prefix.
"""

from __future__ import annotations

import importlib
import pkgutil

from innerssl.registry import Registry


def _import_network_modules() -> None:
    import innerssl.networks as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


ENCODERS: Registry = Registry("encoder", populate=_import_network_modules)
FAMILY_SEPARATOR = ":"


def family_of(name: str) -> str:
    """The registry key of an encoder name: ``timm:vit_tiny_patch16_224`` -> ``timm:``; a plain name is its own."""
    prefix, separator, _model = name.partition(FAMILY_SEPARATOR)
    return f"{prefix}{separator}" if separator else name

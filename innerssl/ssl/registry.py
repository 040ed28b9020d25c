"""The SSL method registry: each method file registers its LightningModule with ``@METHODS.register("NAME")``.

A method's own parameters are the keyword arguments of its ``__init__`` (with the paper's defaults there, the
one place they are written), documented in its ``parameter_docs``; :mod:`innerssl.ssl.parameters` turns them
into command-line flags of the container that trains it. Users register their own methods in a
``--config_module``; the registry is read when a method is looked up, never frozen at import.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from innerssl.registry import Registry

if TYPE_CHECKING:
    from innerssl.ssl.base import SSLModule


def _import_method_modules() -> None:
    import innerssl.ssl as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


METHODS: Registry[type[SSLModule]] = Registry("SSL method", populate=_import_method_modules)


def ssl_method(name: str) -> type[SSLModule]:
    """The registered method ``name``; an unknown name lists the known ones (and the closest)."""
    return METHODS.get(name)


def register_method(method: type[SSLModule]) -> type[SSLModule]:
    """Class decorator: register ``method`` under its ``method_name``."""
    if not method.method_name:
        raise ValueError(f"{method.__name__} needs a method_name to be registered")
    return METHODS.register(method.method_name)(method)

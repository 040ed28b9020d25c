"""SSL methods, one LightningModule per file on the shared base in ``base.py``, each registering itself."""

from innerssl.ssl.base import SSLModule
from innerssl.ssl.registry import METHODS, register_method, ssl_method

__all__ = ["METHODS", "SSLModule", "register_method", "ssl_method"]

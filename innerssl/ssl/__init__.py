"""SSL methods, one LightningModule per file on the shared base in ``base.py``."""

from __future__ import annotations

from innerssl.errors import UserError
from innerssl.ssl.barlow_twins import BarlowTwins
from innerssl.ssl.base import SSLModule
from innerssl.ssl.byol import BYOL
from innerssl.ssl.dino import DINO
from innerssl.ssl.mocov3 import MoCoV3
from innerssl.ssl.simclr import SimCLR
from innerssl.ssl.vicreg import VICReg

SSL_METHODS: dict[str, type[SSLModule]] = {
    cls.method_name: cls for cls in (BYOL, SimCLR, DINO, VICReg, BarlowTwins, MoCoV3)
}


def ssl_method(name: str) -> type[SSLModule]:
    if name not in SSL_METHODS:
        raise UserError(f"Unknown ssl_training_type '{name}'. Available: {', '.join(SSL_METHODS)}")
    return SSL_METHODS[name]

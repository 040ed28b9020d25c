"""Archive and file-browser debris that real downloads contain, skipped silently by every folder reader."""

from __future__ import annotations

DEBRIS_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
"""Lower-cased names of archive and file-browser debris; names starting with '.' (``._*``, ``.DS_Store``) too."""


def is_debris(name: str) -> bool:
    """Whether a file or folder is archive / file-browser debris or hidden, to be skipped silently."""
    return name.startswith(".") or name.lower() in DEBRIS_NAMES

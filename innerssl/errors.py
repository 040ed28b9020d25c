"""The one exception type for mistakes a user can make (bad flags, missing folders, broken files).

The runner prints its message as one line, without a traceback, and exits with a non-zero status.
Bugs raise ordinary exceptions and keep their tracebacks.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix; the message names the thing and how to fix it, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class BadImageFile(UserError):
    """An image file that cannot be decoded. Datasets skip and count these instead of stopping."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(reason.split())
        super().__init__(f"Cannot read image {self.path}: {self.reason}")

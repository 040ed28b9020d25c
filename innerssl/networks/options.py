"""Encoder construction options from the command line: ``--encoder_options=img_size=64,patch_size=8``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from innerssl.errors import UserError

TUPLE_SEPARATOR = "x"


def parse_value(text: str) -> Any:
    """``64`` -> 64, ``0.5`` -> 0.5, ``true`` -> True, ``none`` -> None, ``96x96x96`` -> (96, 96, 96), else text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    parts = lowered.split(TUPLE_SEPARATOR)
    if len(parts) > 1 and all(part.isdigit() for part in parts):
        return tuple(int(part) for part in parts)
    return text.strip()


def parse_encoder_options(items: Iterable[str], parameter: str = "--encoder_options") -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise UserError(f"{parameter} entry '{item}' is not key=value (e.g. {parameter}=img_size=64,patch_size=8)")
        options[key.strip()] = parse_value(value)
    return options

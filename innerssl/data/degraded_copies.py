"""Stored crappified copies of a split's images, as BiaPy's ``<data>_ssl_source`` folders.

BiaPy's restoration pretext task can degrade each image once and train on the fixed (degraded, clean) pairs,
writing the degraded copies beside the data. :func:`degraded_copies` does the same in the run cache
(``<run cache root>/<dataset name>_ssl_source/<split>/``, chosen by the caller): one float32 ``<name>.npy`` per
image and a ``manifest.json`` recording, per image, its source file (path, size, mtime_ns) and the settings
(noise, resizing factor, seed and the caller's ``settings_key``, e.g. the normalisation). A copy is reused while
all of these still match; otherwise it is made again (and the reason logged). Files are written atomically
(a temporary file renamed over the old), so a killed run leaves no half-written copy.

Degradation: :func:`~innerssl.augment.crappify.crappify` of the *normalised* image, with a generator seeded from
``(seed, image name)``, so a copy does not depend on which other images the split holds. The maximum is each
image's own, as BiaPy (which crappifies before normalising, with the image's maximum; with ``div`` normalisation,
a scaling, that is the same thing). Images with negative values (``zero_mean_unit_variance``) would be clipped
at 0 by crappify, so they are shifted to start at 0 first and shifted back after: the noise is then
``noise x (max - min)`` and the result stays within the image's own [min, max]. Non-negative images are not
shifted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innerssl.augment.crappify import check_crappify_settings, crappify
from innerssl.data.patch_datamodule import LoadedImage

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST_NAME", "degrade_image", "degraded_copies"]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MAX_NAMES = 5


def degrade_image(image: Tensor, noise: float, resizing_factor: int, seed: int, name: str) -> Tensor:
    """The crappified copy of one normalised (C, *spatial) image (see the module doc), float32."""
    generator = torch.Generator().manual_seed(_image_seed(seed, name))
    image = image.to(torch.float32)
    low = min(float(image.min()), 0.0)
    degraded = crappify((image - low)[None], noise, resizing_factor, generator, maximum=None)[0]
    return (degraded + low).contiguous()


def degraded_copies(
    images: Sequence[LoadedImage],
    folder: Path,
    noise: float,
    resizing_factor: int,
    seed: int,
    settings_key: str,
) -> list[Tensor]:
    """The degraded copy of each image, in the images' order, read from ``folder`` or made and stored there."""
    check_crappify_settings(noise, resizing_factor)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"noise": float(noise), "resizing_factor": int(resizing_factor), "seed": int(seed), "key": settings_key}
    old = _read_manifest(folder)
    old_entries: dict[str, Any] = old.get("images", {}) if old.get("settings") == settings else {}
    if old.get("images") and old.get("settings") != settings:
        logger.info(
            "%s: the degradation settings changed (%s -> %s): making the copies again",
            folder,
            old.get("settings"),
            settings,
        )
    entries: dict[str, Any] = {}
    copies: list[Tensor] = []
    remade: list[str] = []
    for loaded in images:
        entry = _source_entry(loaded)
        path = folder / f"{loaded.name}.npy"
        copy = _reusable(path, old_entries.get(loaded.name), entry)
        if copy is None:
            if loaded.name in old_entries:
                remade.append(loaded.name)
            copy = degrade_image(loaded.image, noise, resizing_factor, seed, loaded.name)
            _save_atomic(path, copy.numpy())
        entries[loaded.name] = entry
        copies.append(copy)
    if remade:
        logger.info(
            "%s: %d source image(s) changed, their copies were made again: %s", folder, len(remade), _names(remade)
        )
    for stale in set(old.get("images", {})) - set(entries):
        (folder / f"{stale}.npy").unlink(missing_ok=True)
    manifest = {"version": MANIFEST_VERSION, "settings": settings, "images": entries}
    if manifest != old:
        _write_atomic(folder / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return copies


def _image_seed(seed: int, name: str) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())]).generate_state(2)
    return (int(state[0]) << 31) ^ int(state[1])


def _source_entry(loaded: LoadedImage) -> dict[str, Any]:
    """What identifies the image's source file: path, size and modification time, and the image's shape."""
    try:
        stat = loaded.source.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:  # the source is gone: the copy can't be checked, so it is made again every time
        size, mtime = -1, -1
    return {"source": str(loaded.source), "size": size, "mtime_ns": mtime, "shape": list(loaded.image.shape)}


def _reusable(path: Path, old: dict[str, Any] | None, entry: dict[str, Any]) -> Tensor | None:
    """The stored copy when the manifest says it was made from this very source, else None."""
    if old != entry or entry["size"] < 0 or not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        logger.warning("%s cannot be read (%s): making it again", path, error)
        return None
    if list(array.shape) != entry["shape"] or array.dtype != np.float32:
        return None
    return torch.from_numpy(array)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("%s cannot be read (%s): making every copy again", path, error)
        return {}
    return manifest if isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION else {}


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_atomic(path: Path, array: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")

"""One entry point that turns any supported 2D image file into float32 in [0, 1].

Datasets call :func:`read_image` and never care about formats: (H, W) for grayscale, (H, W, 3) for
colour. Integers are divided by their type's full range (8-bit by 255, 16-bit by 65535) rather than by
the image's own maximum, so one intensity means the same in every image. A file that cannot be read
raises :class:`BadImageFile` naming the file and the reason, which datasets count and skip.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from innerssl.data.dicom import is_dicom_file, read_dicom_image
from innerssl.errors import BadImageFile

DICOM_SUFFIXES = (".dcm", ".dicom")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_SUFFIXES = (*DICOM_SUFFIXES, *PIL_SUFFIXES, *TIFF_SUFFIXES)
"""Files with another suffix (or none) are read as DICOM when they carry the DICOM 'DICM' marker."""

UINT8_MAX = float(np.iinfo(np.uint8).max)
UINT16_MAX = float(np.iinfo(np.uint16).max)
PIL_FULL_SCALE = {
    "1": 1.0,
    "L": UINT8_MAX,
    "RGB": UINT8_MAX,
    "I;16": UINT16_MAX,
    "I;16L": UINT16_MAX,
    "I;16B": UINT16_MAX,
    "I;16N": UINT16_MAX,
    "I": UINT16_MAX,  # 32-bit mode; from PNG / BMP it only ever holds 16-bit samples
    "F": 1.0,
}
"""Pillow modes kept as they are, with the value that means full intensity."""
PIL_GRAY_WITH_ALPHA = ("LA", "La")
RGB_CHANNELS = 3
SAMPLE_AXIS = "S"
"""tifffile's name for the samples-per-pixel (colour) axis; Y and X are rows and columns."""


def read_image(path: Path, apply_voi_lut: bool = True) -> np.ndarray:
    """Decode ``path`` to float32 in [0, 1]: (H, W) grayscale or (H, W, 3) RGB.

    Dispatches on the suffix, case-insensitively: DICOM (see :func:`read_dicom_image`, which uses
    ``apply_voi_lut``), PNG / JPEG / BMP through Pillow, TIFF through tifffile. Palette, alpha, CMYK
    and YCbCr images become RGB (alpha dropped); gray + alpha becomes gray. Raises :class:`BadImageFile`.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageFile(path, "is a directory, not a file" if path.is_dir() else "file not found")
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return read_dicom_image(path, apply_voi_lut=apply_voi_lut)
    if suffix in PIL_SUFFIXES:
        return _read_with_pillow(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if is_dicom_file(path):  # e.g. 'IM0001', 'scan.IMA' or UID-named files from a PACS export
        return read_dicom_image(path, apply_voi_lut=apply_voi_lut)
    raise BadImageFile(
        path,
        f"unsupported file type {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)} "
        "or DICOM files with any name",
    )


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore")  # e.g. corrupt EXIF: noise repeated for every file of a dataset
            pixels, full_scale = _pillow_pixels(image)
    except MemoryError:
        raise
    except Image.DecompressionBombError:
        raise BadImageFile(path, "it exceeds Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except Exception as error:  # Pillow signals broken files with OSError, ValueError, SyntaxError, ...
        raise BadImageFile(path, f"cannot be decoded ({type(error).__name__}: {error})") from None
    image = np.divide(pixels, full_scale, dtype=np.float32)
    if pixels.dtype.kind in "if":  # signed 32-bit or float modes can lie outside the range
        np.nan_to_num(image, copy=False, nan=0.0)
        np.clip(image, 0.0, 1.0, out=image)
    return image


def _pillow_pixels(image: Image.Image) -> tuple[np.ndarray, float]:
    """The decoded samples in a mode kept as is (see PIL_FULL_SCALE), and their full-scale value."""
    if image.mode in PIL_GRAY_WITH_ALPHA:
        image = image.convert("L")
    elif image.mode not in PIL_FULL_SCALE:
        if image.mode in ("P", "PA"):  # via RGBA so palette transparency converts without a warning
            image = image.convert("RGBA")
        image = image.convert("RGB")
    return np.asarray(image), PIL_FULL_SCALE[image.mode]


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings(), tifffile.TiffFile(path) as tiff:
            warnings.simplefilter("ignore")
            series = tiff.series[0]
            pixels, axes = series.asarray(), series.axes
    except MemoryError:
        raise
    except Exception as error:  # tifffile signals broken files with TiffFileError, ValueError, OSError, ...
        raise BadImageFile(path, f"cannot be decoded ({type(error).__name__}: {error})") from None
    return _tiff_to_unit(path, _single_tiff_image(path, pixels, axes))


def _single_tiff_image(path: Path, pixels: np.ndarray, axes: str) -> np.ndarray:
    """(H, W) or (H, W, 3) from tifffile's array and axis names; several pages or planes are refused."""
    extra = [index for index, axis in enumerate(axes) if axis not in ("Y", "X", SAMPLE_AXIS)]
    if any(pixels.shape[index] > 1 for index in extra):
        raise BadImageFile(
            path, f"it holds several images (TIFF axes {axes}, shape {pixels.shape}); 2D datasets need one image"
        )
    pixels = pixels.reshape([size for size, axis in zip(pixels.shape, axes) if axis in ("Y", "X", SAMPLE_AXIS)])
    axes = "".join(axis for axis in axes if axis in ("Y", "X", SAMPLE_AXIS))
    if SAMPLE_AXIS not in axes:
        return pixels
    pixels = np.moveaxis(pixels, axes.index(SAMPLE_AXIS), -1)  # planar (S, Y, X) storage -> (Y, X, S)
    channels = pixels.shape[-1]
    if channels in (1, 2):  # gray, or gray + alpha
        return pixels[..., 0]
    if channels in (RGB_CHANNELS, RGB_CHANNELS + 1):  # RGB, or RGB + alpha
        return pixels[..., :RGB_CHANNELS]
    raise BadImageFile(path, f"it has {channels} samples per pixel; expected 1 (gray), 3 (RGB) or 4 (RGBA)")


def _tiff_to_unit(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Integers divided by their type's maximum (negative values clip to 0); floats kept and clipped."""
    kind = pixels.dtype.kind
    if kind == "b":
        return pixels.astype(np.float32)
    if kind in "ui":
        image = np.divide(pixels, float(np.iinfo(pixels.dtype).max), dtype=np.float32)
    elif kind == "f":
        image = pixels.astype(np.float32, copy=False)
        np.nan_to_num(image, copy=False, nan=0.0)
    else:
        raise BadImageFile(path, f"its pixel type {pixels.dtype} is not supported; expected integers or floats")
    return np.clip(image, 0.0, 1.0, out=image)

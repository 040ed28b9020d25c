"""BiaPy's dataset layout, read as BiaPy writes it, so its datasets need no conversion:

    root/train/x/<images>        required
    root/train/y/<targets>       optional: ground truth (masks or restoration targets), same names as x/
    root/val/x/, root/val/y/     optional; without val/x a seeded carve of --val_fraction of train is used
    root/test/x/, root/test/y/   optional

A target matches its image by name without the suffix (``a.tif`` <-> ``a.png``); a ``y/`` with a missing or
an extra file is refused. Folders are flat, as in BiaPy: subfolders of ``x/`` and ``y/`` and files of other
types are left out with a warning, except that with ``spatial_dims=3`` a subfolder holding DICOM files is a DICOM
series, one sample named by the folder (:mod:`innerssl.data.dicom_volumes`). Archive debris (``__MACOSX``,
``._*``, hidden files, ``Thumbs.db``, ``desktop.ini``) is skipped silently. DICOM files are recognised by their
suffix only (.dcm, .dicom).

Formats: TIFF (tifffile), ``.npy``, NIfTI (``.nii``, ``.nii.gz``, nibabel; 3D) and PNG / JPEG / BMP / DICOM
through innerssl's 2D readers (:mod:`innerssl.data.image_io`). Arrays come back channel-first,
``(C, y, x)`` or ``(C, z, y, x)``.

Axes. ``spatial_dims`` (2 or 3) is the user's statement of what the data is; a file that does not fit it,
or could be read two ways, is refused with a :class:`UserError` saying what to change, never guessed:

- Arrays without axis names (``.npy``; TIFFs written by tifffile or others without ImageJ / OME metadata)
  follow BiaPy's channels-last convention: leading length-1 axes are dropped while there are more axes than
  ``spatial_dims``; then ``spatial_dims`` axes are ``(y, x)`` / ``(z, y, x)``, and one more axis is channels
  ``(y, x, c)`` / ``(z, y, x, c)`` only if it is small: at most MAX_CHANNELS and smaller than both y and x.
  So with ``spatial_dims=2`` a ``(31, 61, 29)`` stack is refused (set --spatial_dims=3), as is a
  channel-first ``(3, 256, 256)`` array; with ``spatial_dims=3`` a 3-axis array is ``(z, y, x)``.
- A TIFF's samples-per-pixel axis (RGB, extra samples, planar storage; tifffile's ``S``) is always channels.
- ImageJ and OME TIFFs name their axes; those names are used (C and S channels, Z depth). A time axis or any
  other axis longer than 1 is refused, as is an ImageJ ``CYX`` file (what ``tifffile.imwrite(..., imagej=True)``
  writes for a plain 3D array) read with ``spatial_dims=3``: its metadata says channels, not slices.
- NIfTI voxel axes ``(i, j, k)`` become ``(z, y, x) = (k, j, i)``, stored order, no reorientation by the
  affine; a 4th (time) or 5th (vector) axis is channels if at most MAX_CHANNELS long. With ``spatial_dims=2``
  only a NIfTI with one slice (k = 1) is accepted.
- PNG / JPEG / BMP are 2D only, and so is a single-frame DICOM file. With ``spatial_dims=3`` a DICOM series
  folder or a multi-frame DICOM file is a volume ``(C, z, y, x)`` of modality values, its slices ordered by
  position (:mod:`innerssl.data.dicom_volumes`); with ``spatial_dims=2`` folders and multi-frame files are refused.

Dtypes (:class:`ImageInfo` reports them). Integers and booleans keep their source dtype (native byte order)
so that "divide by the type's maximum" (:mod:`innerssl.data.normalisation`) knows the type's full range;
floats become float32. PNG / JPEG / BMP / DICOM come back as float32 already in [0, 1], as innerssl's readers
decode them (divided by their type's or header's full range), with ``dtype_max = 1``; DICOM volumes follow the
NIfTI rule instead (stored integers, or float32 where a rescale applies). Volumes carry their affine. Complex, object or
structured arrays and floats holding NaN or infinity are bad files.

Bad files. As everywhere in innerssl, a file that cannot be decoded raises :class:`BadImageFile`; datasets
skip and count it. :meth:`BiaPyLayout.find` reads every file's header (TIFF tags, ``.npy`` / NIfTI header,
PNG / DICOM header; no pixels) to learn its shape: a file whose header is broken is left out with its sample
(a target's too), recorded in ``bad_files`` and the optional :class:`BadFileLog`. A file whose pixels are
broken passes ``find`` and raises :class:`BadImageFile` from :func:`read_image`. A TIFF for which tifffile
reports a structural error (e.g. a truncated multi-page file it would otherwise read as its first page) is
bad, not read partially. Axis and channel-count problems are the user's to fix and stop the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile
from PIL import Image

from innerssl.data.debris import is_debris
from innerssl.data.dicom import dicom_summary
from innerssl.data.dicom_volumes import is_dicom_series_folder, probe_dicom_volume, read_dicom_volume
from innerssl.data.image_io import (
    DICOM_SUFFIXES,
    PIL_FULL_SCALE,
    PIL_GRAY_WITH_ALPHA,
    PIL_SUFFIXES,
    RGB_CHANNELS,
    TIFF_SUFFIXES,
)
from innerssl.data.image_io import read_image as read_2d_image
from innerssl.errors import BadImageFile, UserError

if TYPE_CHECKING:  # a type only: importing the datasets package pulls in pandas and torch
    from innerssl.data.datasets.base import BadFileLog

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_FOLDER = "x"
TARGET_FOLDER = "y"
SPATIAL_DIMS = (2, 3)
MAX_CHANNELS = 8
CONVERTIBLE_CHANNELS = (1, 3)
"""Gray and RGB: the channel counts --in_channels converts between (ITU-R 601 luminance, or repetition)."""
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
"""An unnamed last axis is channels only when at most this long (and shorter than y and x); see the module doc."""
NUMPY_SUFFIXES = (".npy",)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
FLAT_2D_SUFFIXES = (*PIL_SUFFIXES, *DICOM_SUFFIXES)
"""Formats read by innerssl's 2D readers (image_io), float32 in [0, 1]."""
SUPPORTED_SUFFIXES = (*TIFF_SUFFIXES, *NUMPY_SUFFIXES, *NIFTI_SUFFIXES, *FLAT_2D_SUFFIXES)
SEMANTIC_TIFF_KINDS = ("imagej", "ome")
"""tifffile series kinds whose axis letters come from metadata that names them, so they are trusted."""
CHANNEL_LETTERS = "CS"
MAX_NAMES_IN_MESSAGE = 5
FLAGS = {"spatial_dims": "--spatial_dims", "val_fraction": "--val_fraction"}
EXPECTED_LAYOUT = (
    "expected BiaPy's layout root/train/x/<images> with optional root/train/y/<targets of the same names>, "
    "root/val/x (and y/) and root/test/x (and y/)"
)


@dataclass(frozen=True)
class Sample:
    """One image and its ground truth (None where its split has no y/); ``name`` is the file name sans suffix."""

    image_path: Path
    target_path: Path | None
    name: str


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` returns (or will return) for a file, and how its source was laid out."""

    shape: tuple[int, ...]
    """Channel-first output shape (C, y, x) or (C, z, y, x)."""
    dtype: np.dtype
    """Output dtype: the source integer / bool dtype, or float32."""
    dtype_max: float | None
    """The value that means full intensity: the integer type's maximum, 1 for bool and for PNG / JPEG / BMP /
    DICOM (already scaled to [0, 1]), None for float sources (no full range is known)."""
    axes: str
    """The source axes in source order as read: e.g. 'YX', 'YXC', 'ZYX', 'CYX' (planar), 'XYZ' (NIfTI);
    a '1' is a length-1 axis that was dropped."""
    source_shape: tuple[int, ...]
    affine: tuple[tuple[float, ...], ...] | None = None
    """Volumes (NIfTI, DICOM): the 4x4 matrix from output indices (z, y, x, 1) to RAS+ millimetres; None for 2D
    images and formats without one."""

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.shape[1:]


@dataclass(frozen=True)
class _Plan:
    """How to turn a source array into (C, *spatial): drop length-1 axes, then transpose."""

    drop: tuple[int, ...]
    """Source axes (all length 1) to drop."""
    order: tuple[int, ...]
    """Axes of the array after dropping: the channel axis (if any) first, then the spatial axes in order."""
    has_channels: bool
    axes: str

    def output_shape(self, source_shape: Sequence[int]) -> tuple[int, ...]:
        kept = [size for index, size in enumerate(source_shape) if index not in self.drop]
        shape = tuple(kept[index] for index in self.order)
        return shape if self.has_channels else (1, *shape)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        pixels = pixels.reshape([size for index, size in enumerate(pixels.shape) if index not in self.drop])
        pixels = np.transpose(pixels, self.order)
        return np.ascontiguousarray(pixels if self.has_channels else pixels[None])


# --- reading one file ----------------------------------------------------------------------------------------


def read_image(path: Path | str, spatial_dims: int) -> tuple[np.ndarray, ImageInfo]:
    """The image at ``path`` as a channel-first array (C, *spatial) and its :class:`ImageInfo`.

    Raises :class:`BadImageFile` for a file that cannot be decoded (skip and count it) and :class:`UserError`
    for one that does not fit ``spatial_dims`` (see the module docstring for the rules).
    """
    path = Path(path)
    check_spatial_dims(spatial_dims)
    if _is_dicom_volume(path, spatial_dims):
        return read_dicom_volume(path)
    if not path.is_file():
        raise BadImageFile(path, "is a directory, not a file" if path.is_dir() else "file not found")
    suffix = file_suffix(path.name)
    reader = _array_reader(suffix)
    if reader is not None:
        pixels, info = reader(path, spatial_dims, True)
        assert pixels is not None
        return pixels, info
    if suffix in FLAT_2D_SUFFIXES:
        _require_2d(path, spatial_dims)
        image = read_2d_image(path)
        info = _flat_2d_info(image.shape)
        return np.ascontiguousarray(np.moveaxis(image, -1, 0) if image.ndim == 3 else image[None]), info
    raise BadImageFile(path, f"unsupported file type {suffix or '(no suffix)'!r}; supported: {_supported_text()}")


def probe_image(path: Path | str, spatial_dims: int) -> ImageInfo:
    """The :class:`ImageInfo` :func:`read_image` would return, from the file's header alone (no pixels).

    Same errors as :func:`read_image`, except that broken pixel data is only found by reading it.
    """
    path = Path(path)
    check_spatial_dims(spatial_dims)
    if _is_dicom_volume(path, spatial_dims):
        return probe_dicom_volume(path)
    if not path.is_file():
        raise BadImageFile(path, "is a directory, not a file" if path.is_dir() else "file not found")
    suffix = file_suffix(path.name)
    reader = _array_reader(suffix)
    if reader is not None:
        return reader(path, spatial_dims, False)[1]
    if suffix in PIL_SUFFIXES:
        _require_2d(path, spatial_dims)
        return _probe_pillow(path)
    if suffix in DICOM_SUFFIXES:
        _require_2d(path, spatial_dims)
        summary = dicom_summary(path)  # raises BadImageFile for a broken header
        if int(summary["number_of_frames"]) > 1:
            raise BadImageFile(path, f"it is a multi-frame file with {summary['number_of_frames']} frames")
        channels = 1 if str(summary["photometric_interpretation"]).startswith("MONOCHROME") else RGB_CHANNELS
        size = (int(summary["rows"]), int(summary["columns"]))
        return _flat_2d_info((*size, channels) if channels > 1 else size)
    raise BadImageFile(path, f"unsupported file type {suffix or '(no suffix)'!r}; supported: {_supported_text()}")


def _is_dicom_volume(path: Path, spatial_dims: int) -> bool:
    """With 3D data a folder is a DICOM series and a DICOM file a multi-frame volume (:mod:`.dicom_volumes`)."""
    return spatial_dims == 3 and (path.is_dir() or file_suffix(path.name) in DICOM_SUFFIXES)


ArrayReader = Callable[[Path, int, bool], tuple[np.ndarray | None, ImageInfo]]
"""(path, spatial_dims, read the pixels?) -> (pixels or None, info), for the formats this module decodes itself."""


def _array_reader(suffix: str) -> ArrayReader | None:
    if suffix in TIFF_SUFFIXES:
        return _read_tiff
    if suffix in NUMPY_SUFFIXES:
        return _read_numpy
    return _read_nifti if suffix in NIFTI_SUFFIXES else None


def convert_channels(pixels: np.ndarray, channels: int | None) -> np.ndarray:
    """A channel-first image with ``channels`` channels (None: unchanged): RGB to gray by ITU-R 601 luminance (as
    Pillow's "L"), gray to RGB by repetition; other conversions are refused earlier, by the layout's check."""
    if channels is None or pixels.shape[0] == channels:
        return pixels
    if pixels.shape[0] == 3 and channels == 1:
        weights = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float64).reshape(3, *([1] * (pixels.ndim - 1)))
        gray = (pixels.astype(np.float64) * weights).sum(axis=0, keepdims=True)
        return gray.astype(pixels.dtype) if pixels.dtype.kind == "f" else np.rint(gray).astype(pixels.dtype)
    if pixels.shape[0] == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=0)
    raise ValueError(f"Cannot convert {pixels.shape[0]} channels to {channels}")


def check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in SPATIAL_DIMS:
        raise UserError(f"{FLAGS['spatial_dims']}={spatial_dims} is not supported: use 2 (images) or 3 (volumes)")


def file_suffix(name: str) -> str:
    """The lower-cased suffix that decides the format; '.nii.gz' counts as one."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return os.path.splitext(lower)[1]


def file_stem(name: str) -> str:
    """The name a target is matched by: the file name without its (format) suffix."""
    return name[: len(name) - len(file_suffix(name))]


def _supported_text() -> str:
    return ", ".join(SUPPORTED_SUFFIXES)


def _require_2d(path: Path, spatial_dims: int) -> None:
    if spatial_dims != 2:
        raise UserError(
            f"{path} is a 2D {file_suffix(path.name)} image but {FLAGS['spatial_dims']}=3: set "
            f"{FLAGS['spatial_dims']}=2 for 2D data, or store volumes as TIFF, .npy, NIfTI or DICOM (a series "
            "folder or a multi-frame file)"
        )


def _flat_2d_info(source_shape: Sequence[int]) -> ImageInfo:
    """PNG / JPEG / BMP / DICOM as image_io decodes them: (H, W) or (H, W, 3) float32 in [0, 1]."""
    shape = tuple(int(size) for size in source_shape)
    channel_first = (shape[2], *shape[:2]) if len(shape) == 3 else (1, *shape)
    return ImageInfo(channel_first, np.dtype(np.float32), 1.0, "YXC" if len(shape) == 3 else "YX", shape)


def _probe_pillow(path: Path) -> ImageInfo:
    """Pillow's header: size and mode, with image_io's mode rules (gray + alpha is gray, the rest not kept is RGB)."""
    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore")
            mode, (width, height) = image.mode, image.size
    except MemoryError:
        raise
    except Exception as error:  # Pillow signals broken files with OSError, ValueError, SyntaxError, ...
        raise BadImageFile(path, f"cannot be decoded ({type(error).__name__}: {error})") from None
    gray = mode in PIL_GRAY_WITH_ALPHA or (mode in PIL_FULL_SCALE and mode != "RGB")
    return _flat_2d_info((height, width) if gray else (height, width, RGB_CHANNELS))


def _output_dtype(path: Path, dtype: np.dtype) -> tuple[np.dtype, float | None]:
    """The dtype :func:`read_image` returns for a source dtype, and that type's full-intensity value."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return np.dtype(np.bool_), 1.0
    if dtype.kind in "ui":
        native = dtype.newbyteorder("=")
        return native, float(np.iinfo(native).max)
    if dtype.kind == "f":
        return np.dtype(np.float32), None
    raise BadImageFile(path, f"its pixel type {dtype} is not supported; expected integers, booleans or floats")


def _finish(path: Path, pixels: np.ndarray, plan: _Plan, info: ImageInfo) -> np.ndarray:
    """Pixels in the planned layout and output dtype; floats with NaN / infinity are refused, not patched."""
    pixels = np.asarray(pixels)
    if pixels.shape != info.source_shape:
        raise BadImageFile(path, f"it decodes to shape {pixels.shape}, but its header says {info.source_shape}")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise BadImageFile(path, "it holds NaN or infinite values")
    return plan.apply(pixels.astype(info.dtype, copy=False))


# --- axis rules ------------------------------------------------------------------------------------------------


def _unnamed_plan(path: Path, shape: tuple[int, ...], spatial_dims: int, channel_axis: int | None = None) -> _Plan:
    """BiaPy's channels-last rule for arrays without axis names; ``channel_axis``: a known channel axis (TIFF S)."""
    drop: list[int] = []
    rest = [axis for axis in range(len(shape)) if axis != channel_axis]
    while len(rest) > spatial_dims and shape[rest[0]] == 1:
        drop.append(rest.pop(0))
    if channel_axis is None and len(rest) == spatial_dims + 1:
        channels, plane = shape[rest[-1]], [shape[axis] for axis in rest[-3:-1]]
        if channels > MAX_CHANNELS or channels >= min(plane):
            raise UserError(_ambiguous_message(path, shape, spatial_dims))
        channel_axis = rest.pop()
    if len(rest) != spatial_dims:
        raise UserError(_dimension_message(path, shape, spatial_dims, len(rest), channel_axis is not None))
    names = ["1"] * len(shape)
    for axis, name in zip(rest, "ZYX"[-spatial_dims:]):
        names[axis] = name
    if channel_axis is not None:
        names[channel_axis] = "C"
    kept = [axis for axis in range(len(shape)) if axis not in drop]
    order = ([kept.index(channel_axis)] if channel_axis is not None else []) + [kept.index(axis) for axis in rest]
    return _Plan(tuple(drop), tuple(order), channel_axis is not None, "".join(names))


def _named_plan(path: Path, shape: tuple[int, ...], letters: str, spatial_dims: int, described: str) -> _Plan:
    """A plan from axis names: C / S channels, Z depth, Y and X; anything else must be length 1."""
    channel_axes = [axis for axis, letter in enumerate(letters) if letter in CHANNEL_LETTERS and shape[axis] > 1]
    if len(channel_axes) > 1:
        raise UserError(
            f"{path} has two channel axes ({described} {letters}, shape {shape}): store one image with one "
            "channel axis per file"
        )
    for axis, letter in enumerate(letters):
        if letter not in "ZYX" + CHANNEL_LETTERS and shape[axis] > 1:
            raise UserError(
                f"{path} holds {shape[axis]} images along its {letter} axis ({described} {letters}, shape "
                f"{shape}), e.g. a time series: store one image per file"
            )
    if "Y" not in letters or "X" not in letters:
        raise BadImageFile(path, f"its axes ({described} {letters}) have no Y and X")
    has_z = "Z" in letters and (spatial_dims == 3 or shape[letters.index("Z")] > 1)
    if spatial_dims == 2 and has_z:
        raise UserError(
            f"{path} is a 3D stack ({described} {letters}, shape {shape}) but {FLAGS['spatial_dims']}=2: "
            f"set {FLAGS['spatial_dims']}=3 for 3D data"
        )
    if spatial_dims == 3 and not has_z:
        channels = shape[channel_axes[0]] if channel_axes else 1
        raise UserError(
            f"{path} is a 2D image with {channels} channel(s) ({described} {letters}, shape {shape}) but "
            f"{FLAGS['spatial_dims']}=3: set {FLAGS['spatial_dims']}=2, or if it is a z-stack re-save it with its "
            "planes as slices (ImageJ: Image > Properties, or tifffile.imwrite(..., metadata={'axes': 'ZYX'}))"
        )
    spatial = [letters.index(letter) for letter in ("ZYX" if has_z else "YX")]
    keep = set(spatial) | set(channel_axes)
    drop = tuple(axis for axis in range(len(shape)) if axis not in keep)
    kept = [axis for axis in range(len(shape)) if axis not in drop]
    order = [kept.index(axis) for axis in (*channel_axes, *spatial)]
    names = "".join(
        ("C" if axis in channel_axes else letters[axis]) if axis in keep else "1" for axis in range(len(shape))
    )
    return _Plan(drop, tuple(order), bool(channel_axes), names)


def _ambiguous_message(path: Path, shape: tuple[int, ...], spatial_dims: int) -> str:
    flag = FLAGS["spatial_dims"]
    if spatial_dims == 2:
        return (
            f"{path} has shape {shape}, which is neither (y, x) nor (y, x, c) with at most {MAX_CHANNELS} channels "
            f"({flag}=2): if it is a 3D stack (z, y, x) set {flag}=3; if it is channel-first, save it as (y, x, c)"
        )
    return (
        f"{path} has shape {shape}, which is neither (z, y, x) nor (z, y, x, c) with at most {MAX_CHANNELS} "
        f"channels ({flag}=3): save volumes channels-last, (z, y, x, c)"
    )


def _dimension_message(path: Path, shape: tuple[int, ...], spatial_dims: int, found: int, channels: bool) -> str:
    flag = FLAGS["spatial_dims"]
    kind = "with channels " if channels else ""
    if found < spatial_dims:
        return f"{path} is a 2D image {kind}(shape {shape}) but {flag}=3: set {flag}=2 for 2D data"
    if spatial_dims == 2:
        return (
            f"{path} has shape {shape}: too many axes for a 2D image {kind}({flag}=2); "
            f"if it is 3D data set {flag}=3, and store one image per file"
        )
    return f"{path} has shape {shape}: too many axes for a 3D image {kind}(z, y, x, c); store one volume per file"


# --- formats -----------------------------------------------------------------------------------------------------

_tiff_errors: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("innerssl_tiff_errors", default=None)


class _CollectTiffErrors(logging.Filter):
    """Takes tifffile's ERROR records while this module reads a file: they become the bad-file reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        collected = _tiff_errors.get()
        if collected is None:
            return True
        if record.levelno >= logging.ERROR:
            collected.append(record.getMessage())
        return False


_TIFF_FILTER = _CollectTiffErrors()


@contextlib.contextmanager
def _tiff_error_log() -> Iterator[list[str]]:
    tiff_logger = logging.getLogger("tifffile")
    if _TIFF_FILTER not in tiff_logger.filters:
        tiff_logger.addFilter(_TIFF_FILTER)
    collected: list[str] = []
    token = _tiff_errors.set(collected)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield collected
    finally:
        _tiff_errors.reset(token)


def _read_tiff(path: Path, spatial_dims: int, pixels: bool) -> tuple[np.ndarray | None, ImageInfo]:
    try:
        with _tiff_error_log() as errors, tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            shape, letters, dtype, kind = tuple(series.shape), series.axes, series.dtype, series.kind
            data = series.asarray() if pixels and not errors else None
    except MemoryError:
        raise
    except Exception as error:  # tifffile signals broken files with TiffFileError, ValueError, OSError, ...
        raise BadImageFile(path, f"cannot be decoded ({type(error).__name__}: {error})") from None
    if errors:
        raise BadImageFile(path, f"it is damaged or truncated (tifffile: {errors[0][:300]})")
    if kind in SEMANTIC_TIFF_KINDS:
        plan = _named_plan(path, shape, letters, spatial_dims, f"{kind} TIFF axes")
    else:
        samples = letters.index("S") if "S" in letters else None
        plan = _unnamed_plan(path, shape, spatial_dims, channel_axis=samples)
    out_dtype, dtype_max = _output_dtype(path, dtype)
    info = ImageInfo(plan.output_shape(shape), out_dtype, dtype_max, plan.axes, shape)
    return (None if data is None else _finish(path, data, plan, info)), info


def _read_numpy(path: Path, spatial_dims: int, pixels: bool) -> tuple[np.ndarray | None, ImageInfo]:
    try:
        array = np.load(path, mmap_mode=None if pixels else "r", allow_pickle=False)
        shape, dtype = tuple(array.shape), array.dtype
    except MemoryError:
        raise
    except Exception as error:  # a bad header, a pickle, a truncated file: ValueError, OSError, EOFError, ...
        raise BadImageFile(path, f"cannot be read as a .npy array ({type(error).__name__}: {error})") from None
    out_dtype, dtype_max = _output_dtype(path, dtype)
    plan = _unnamed_plan(path, shape, spatial_dims)
    info = ImageInfo(plan.output_shape(shape), out_dtype, dtype_max, plan.axes, shape)
    return (_finish(path, array, plan, info) if pixels else None), info


def _read_nifti(path: Path, spatial_dims: int, pixels: bool) -> tuple[np.ndarray | None, ImageInfo]:
    try:
        import nibabel
    except ImportError:
        raise UserError(f"reading NIfTI files such as {path} needs nibabel: pip install nibabel") from None
    try:
        image: Any = nibabel.load(path)
        shape = tuple(int(size) for size in image.shape)
        proxy = image.dataobj
        scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
        dtype = np.dtype(np.float32) if scaled else image.get_data_dtype()
        voxel_to_world = np.asarray(image.affine, dtype=np.float64)
        data = np.asanyarray(proxy) if pixels else None
    except MemoryError:
        raise
    except Exception as error:  # nibabel's ImageFileError, gzip's BadGzipFile / EOFError, OSError, ...
        raise BadImageFile(path, f"cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    letters = "XYZ" + "CC" + "?" * max(0, len(shape) - 5)
    plan = _nifti_plan(path, shape, letters[: len(shape)], spatial_dims)
    out_dtype, dtype_max = _output_dtype(path, dtype)
    affine = None
    if spatial_dims == 3 and np.isfinite(voxel_to_world).all():
        # output (z, y, x) = voxel (k, j, i): the columns of nibabel's (i, j, k) affine, reversed
        affine = tuple(tuple(float(value) for value in row) for row in voxel_to_world[:, [2, 1, 0, 3]])
    info = ImageInfo(plan.output_shape(shape), out_dtype, dtype_max, plan.axes, shape, affine)
    return (None if data is None else _finish(path, data, plan, info)), info


def _nifti_plan(path: Path, shape: tuple[int, ...], letters: str, spatial_dims: int) -> _Plan:
    """NIfTI axes: (i, j, k) = (X, Y, Z); the 4th (time) or 5th (vector) axis is channels when short."""
    channel_axes = [axis for axis, letter in enumerate(letters) if letter == "C" and shape[axis] > 1]
    if channel_axes and shape[channel_axes[0]] > MAX_CHANNELS:
        raise UserError(
            f"{path} holds {shape[channel_axes[0]]} volumes along its axis {channel_axes[0] + 1} (NIfTI shape "
            f"{shape}), more than the {MAX_CHANNELS} channels accepted, e.g. a time series: store one volume per file"
        )
    return _named_plan(path, shape, letters, spatial_dims, "NIfTI axes")


# --- the layout ----------------------------------------------------------------------------------------------


def list_image_files(folder: Path, spatial_dims: int = 2) -> dict[str, Path]:
    """Name without suffix -> file, for the supported files directly in ``folder``, sorted by name.

    With ``spatial_dims`` 3 a subfolder holding DICOM files is a series (one volume), named by the folder's whole
    name. Other subfolders and file types are left out with one warning; two entries with one name are refused.
    """
    found: dict[str, Path] = {}
    left_out: list[str] = []
    try:
        with os.scandir(folder) as entries:
            names = sorted((entry.name, entry.is_dir()) for entry in entries if not is_debris(entry.name))
    except OSError as error:
        raise UserError(f"Cannot list the folder {folder} ({error}): check that it exists and is readable") from None
    for name, is_dir in names:
        series = is_dir and spatial_dims == 3 and is_dicom_series_folder(folder / name)
        if not series and (is_dir or file_suffix(name) not in SUPPORTED_SUFFIXES):
            left_out.append(name + ("/" if is_dir else ""))
            continue
        stem = name if series else file_stem(name)
        if stem in found:
            raise UserError(
                f"{folder} holds both {found[stem].name} and {name}, which share the name {stem!r}: keep one, "
                "since targets in y/ are matched to images in x/ by name"
            )
        found[stem] = folder / name
    if left_out:
        logger.warning(
            "%s: %d entries are not supported image files and are left out (%s); supported: %s",
            folder,
            len(left_out),
            _names(left_out),
            _supported_text(),
        )
    return found


def _names(names: Sequence[object]) -> str:
    shown = ", ".join(str(name) for name in names[:MAX_NAMES_IN_MESSAGE])
    rest = len(names) - MAX_NAMES_IN_MESSAGE
    return f"{shown} and {rest} more" if rest > 0 else shown


def _match_targets(x_folder: Path, images: dict[str, Path], y_folder: Path, spatial_dims: int) -> dict[str, Path]:
    """The target of every image, by name; a missing or extra target is a UserError naming the file."""
    targets = list_image_files(y_folder, spatial_dims)
    missing = [images[stem].name for stem in images if stem not in targets]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"{y_folder} has no target for {x_folder / missing[0]}{more}: every image in {x_folder} needs a file "
            f"with the same name in {y_folder}; add it, or remove {y_folder} if the split has no ground truth"
        )
    extra = [targets[stem] for stem in targets if stem not in images]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise UserError(
            f"{extra[0]}{more} matches no image in {x_folder}: remove it or add its image (targets are matched to "
            "images by name without the suffix)"
        )
    return targets


def carve_validation(names: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded (train, val) names from sorted ``names``: round(val_fraction x n), at least 1 when val_fraction > 0,
    and always leaving at least one for training; the same names and seed give the same carve."""
    ordered = sorted(names)
    if val_fraction <= 0 or len(ordered) < 2:
        return ordered, []
    count = min(max(1, round(val_fraction * len(ordered))), len(ordered) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(ordered))[:count].tolist())
    return [n for i, n in enumerate(ordered) if i not in chosen], [n for i, n in enumerate(ordered) if i in chosen]


@dataclass
class BiaPyLayout:
    """The samples of a BiaPy-layout dataset per split, and what their files hold (see the module docstring)."""

    root: Path
    spatial_dims: int
    splits: dict[str, list[Sample]]
    """'train', 'val' and 'test', each a list (empty where the split has no images)."""
    val_source: str
    """'folder' (root/val/x), 'datalist' (its validation list), 'carved' (from train) or 'none' (no val/x, and too
    few train images or fraction 0)."""
    channels: int
    """Channel count shared by every image."""
    target_channels: int | None
    """Channel count shared by every target; None where no split has a y/."""
    infos: dict[Path, ImageInfo] = field(default_factory=dict)
    """Every kept file (images and targets) -> what read_image will return for it."""
    bad_files: dict[Path, str] = field(default_factory=dict)
    """Files whose header cannot be read -> the reason; their samples are left out."""

    @classmethod
    def find(
        cls,
        root: Path | str,
        spatial_dims: int = 2,
        val_fraction: float = 0.1,
        seed: int = 0,
        bad_file_log: BadFileLog | None = None,
        root_flag: str = "--local_dataset",
        channels: int | None = None,
    ) -> BiaPyLayout:
        """Scan ``root`` (see the module docstring); user mistakes raise a one-line :class:`UserError`. ``channels``
        (``--in_channels``): the images' channel count the user asked for (gray <-> RGB converted when read)."""
        check_spatial_dims(spatial_dims)
        if not 0 <= val_fraction < 1:
            raise UserError(f"{FLAGS['val_fraction']}={val_fraction} must be at least 0 and below 1 (e.g. 0.1)")
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"BiaPy dataset folder {root} does not exist: pass the dataset's folder with {root_flag}")
        if not (root / "train" / IMAGE_FOLDER).is_dir():
            raise UserError(
                f"{root} has no train/{IMAGE_FOLDER} folder: {EXPECTED_LAYOUT}; pass its root with {root_flag}"
            )
        pairs = {split: _split_pairs(root, split, spatial_dims) for split in SPLITS}
        if not pairs["train"]:
            raise UserError(f"{root / 'train' / IMAGE_FOLDER} holds no image files (supported: {_supported_text()})")
        val_source = "folder" if pairs["val"] else "none"
        if not pairs["val"]:
            train_names, val_names = carve_validation(list(pairs["train"]), val_fraction, seed)
            if val_names:
                val_source = "carved"
                pairs["val"] = {name: pairs["train"].pop(name) for name in val_names}
                logger.info(
                    "%s has no val/%s: carved %d of %d training images as validation (%s=%g, seed %d): %s",
                    root,
                    IMAGE_FOLDER,
                    len(val_names),
                    len(train_names) + len(val_names),
                    FLAGS["val_fraction"],
                    val_fraction,
                    seed,
                    _names(val_names),
                )
            elif val_fraction == 0:
                logger.info(
                    "%s has no val/%s and %s=0: there is no validation split", root, IMAGE_FOLDER, FLAGS["val_fraction"]
                )
            else:
                logger.warning(
                    "%s has no val/%s and %d training image(s) with %s=%g: there is no validation split; add "
                    "root/val/%s or more training images",
                    root,
                    IMAGE_FOLDER,
                    len(train_names),
                    FLAGS["val_fraction"],
                    val_fraction,
                    IMAGE_FOLDER,
                )
        layout = cls.probed(root, spatial_dims, pairs, val_source, bad_file_log, channels)
        logger.info(
            "BiaPy dataset %s (%dD, %d channel(s)): %s",
            root,
            spatial_dims,
            layout.channels,
            ", ".join(f"{split} {len(layout.splits[split])}" for split in SPLITS),
        )
        return layout

    @classmethod
    def probed(
        cls,
        root: Path,
        spatial_dims: int,
        pairs: dict[str, dict[str, tuple[Path, Path | None]]],
        val_source: str,
        bad_file_log: BadFileLog | None = None,
        channels: int | None = None,
    ) -> BiaPyLayout:
        """The layout of ``pairs`` (split -> name -> (image, target or None)) with every header probed (a bad file
        is left out with its sample, recorded and counted) and the channel counts checked (``channels``:
        ``--in_channels``); shared by every layout :mod:`innerssl.data.image_layouts` reads."""
        layout = cls(root, spatial_dims, {split: [] for split in SPLITS}, val_source, 0, None)
        for split in SPLITS:
            for name, (image_path, target_path) in sorted(pairs.get(split, {}).items()):
                if layout._probe(image_path, bad_file_log) and (
                    target_path is None or layout._probe(target_path, bad_file_log)
                ):
                    layout.splits[split].append(Sample(image_path, target_path, name))
        if not layout.splits["train"]:
            example = next(iter(layout.bad_files.items()), None)
            detail = f" (e.g. {example[0]}: {example[1]})" if example else ""
            raise UserError(f"None of the training images in {root} can be read{detail}: check the files")
        if layout.bad_files:
            logger.warning(
                "%s: %d file(s) cannot be read and are left out with their samples (%s)",
                root,
                len(layout.bad_files),
                _names([str(path) for path in layout.bad_files]),
            )
        samples = [sample for split in SPLITS for sample in layout.splits[split]]
        layout.channels = layout._shared_channels([sample.image_path for sample in samples], "images", channels)
        targets = [sample.target_path for sample in samples if sample.target_path is not None]
        layout.target_channels = layout._shared_channels(targets, "targets") if targets else None
        return layout

    def _probe(self, path: Path, bad_file_log: BadFileLog | None) -> bool:
        """Whether ``path``'s header reads; a bad one is recorded (and counted) instead of stopping the scan."""
        try:
            self.infos[path] = probe_image(path, self.spatial_dims)
        except BadImageFile as error:
            self.bad_files[path] = error.reason
            if bad_file_log is not None:
                bad_file_log.record(error)
            return False
        return True

    def _shared_channels(self, paths: Sequence[Path], what: str, wanted: int | None = None) -> int:
        """The channel count of ``paths``; a file with another count than most is a UserError naming both counts.

        ``wanted`` (``--in_channels``) is the count the user asked for: gray and RGB files then both pass when it is
        1 or 3 (they are converted when read, see :func:`convert_channels`); any other count is still refused."""
        if wanted is not None:
            convertible = CONVERTIBLE_CHANNELS if wanted in CONVERTIBLE_CHANNELS else (wanted,)
            odd = next((path for path in paths if self.infos[path].channels not in convertible), None)
            if odd is not None:
                raise UserError(
                    f"{odd} has {self.infos[odd].channels} channel(s), which --in_channels={wanted} cannot be made "
                    f"from (only gray <-> RGB is converted): convert or remove {odd}"
                )
            return wanted
        counts = Counter(self.infos[path].channels for path in paths)
        common = counts.most_common(1)[0][0]
        odd = next((path for path in paths if self.infos[path].channels != common), None)
        if odd is not None:
            example = next(path for path in paths if self.infos[path].channels == common)
            raise UserError(
                f"{odd} has {self.infos[odd].channels} channel(s) but the other {what} have {common} (e.g. {example}): "
                f"all {what} of a dataset need the same channel count; convert or remove {odd}"
                + (", or set --in_channels=1 or 3 (gray and RGB files are then converted)" if what == "images" else "")
            )
        return common

    def has_targets(self, split: str) -> bool:
        """Whether every sample of ``split`` has a target (False for an empty split)."""
        samples = self.splits[split]
        return bool(samples) and all(sample.target_path is not None for sample in samples)


def _split_pairs(root: Path, split: str, spatial_dims: int) -> dict[str, tuple[Path, Path | None]]:
    """Name -> (image, target or None) of one split folder; empty when the split has no x/."""
    x_folder, y_folder = root / split / IMAGE_FOLDER, root / split / TARGET_FOLDER
    if not x_folder.is_dir():
        if y_folder.is_dir():
            raise UserError(f"{y_folder} has no {IMAGE_FOLDER}/ folder beside it: {EXPECTED_LAYOUT}")
        return {}
    images = list_image_files(x_folder, spatial_dims)
    if not images and split != "train":
        logger.warning("%s holds no image files; the %s split is treated as absent", x_folder, split)
        return {}
    targets = _match_targets(x_folder, images, y_folder, spatial_dims) if y_folder.is_dir() else {}
    return {stem: (path, targets.get(stem)) for stem, path in images.items()}

"""DICOM volumes (``--spatial_dims=3``): a folder of one series' single-frame slices, or one multi-frame file, read
as a channel-first ``(C, z, y, x)`` array of modality values.

- **Series folder**: the ``.dcm`` / ``.dicom`` files directly in the folder are its slices (archive debris and other
  files are ignored). They are ordered along the slice normal (the cross product of ImageOrientationPatient's row
  and column directions) by the projection of their ImagePositionPatient on it, as ITK / GDCM do, so file names and
  InstanceNumber play no part; only a series without positions is ordered by InstanceNumber. A folder holds one
  volume: two SeriesInstanceUIDs, slices of different sizes, pixel types, photometric interpretations or
  orientations, a multi-frame file among the slices, or two slices at one position are refused with a
  :class:`UserError`.
- **Multi-frame file** (NumberOfFrames > 1): the frames in stored order. A single-frame file is a 2D image and is
  refused with ``--spatial_dims=3``.

Values are the modality values: the Modality LUT or Rescale Slope / Intercept of each slice (of each frame, from
the functional groups of enhanced files) is applied; VOI windows and MONOCHROME1 inversion are display steps and
are not. Dtypes follow the NIfTI reading of :mod:`innerssl.data.biapy_layout`: without a rescale (none, or slope 1
and intercept 0) the stored integer dtype with ``dtype_max`` its type's maximum; with one, float32 and
``dtype_max`` None. RGB-like series are 3 channels.

``ImageInfo.affine`` maps output indices ``(z, y, x, 1)`` to RAS+ millimetres (DICOM's LPS patient coordinates with
the first two axes negated, as MONAI and nibabel do), from the first and last slice positions, the orientation and
PixelSpacing; None where the header lacks them.

Why not MONAI's ``PydicomReader`` (1.6.1): it orders a series by InstanceNumber (skipping slices without one), not
by position, and returns a multi-frame file's (frames, rows, columns) pixels as (rows, frames, columns). Decoding
is innerssl's own (:mod:`innerssl.data.dicom`: its transfer syntaxes, silenced headers and scrubbed messages). A
slice whose header or pixels cannot be decoded makes the whole series a :class:`BadImageFile` (path: the folder),
skipped and counted like any bad file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from innerssl.data.debris import is_debris
from innerssl.data.dicom import (
    MONOCHROME,
    RGB_LIKE,
    _decode,
    _detail,
    _number_of_frames,
    _photometric,
    _quiet_pydicom,
    _read_dataset,
)
from innerssl.data.image_io import DICOM_SUFFIXES
from innerssl.errors import BadImageFile, UserError

if TYPE_CHECKING:  # biapy_layout imports this module; ImageInfo is imported where it is built
    from innerssl.data.biapy_layout import ImageInfo

__all__ = ["is_dicom_series_folder", "probe_dicom_volume", "read_dicom_volume", "series_slices"]

SPATIAL_FLAG = "--spatial_dims"
POSITION_TOLERANCE_MM = 1e-3
"""Slices closer than this along the normal are at one position (several echoes or time points in one folder)."""
ORIENTATION_TOLERANCE = 1e-4
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_NAMES = 3


def series_slices(folder: Path) -> list[Path]:
    """The DICOM files (by suffix) directly in ``folder``, sorted by name, debris left out."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries if entry.is_file() and not is_debris(entry.name)]
    except OSError:
        return []
    return [folder / name for name in sorted(names) if os.path.splitext(name)[1].lower() in DICOM_SUFFIXES]


def is_dicom_series_folder(path: Path) -> bool:
    """Whether ``path`` is a folder (not debris) holding DICOM files directly: a series, one volume."""
    return path.is_dir() and not is_debris(path.name) and bool(series_slices(path))


@dataclass(frozen=True)
class _Plane:
    """What one file's header says, for ordering, checking and the volume's info."""

    path: Path
    frames: int
    rows: int
    columns: int
    photometric: str
    stored: np.dtype
    series: str
    rescaled: bool
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, ...] | None
    instance: int | None

    @property
    def channels(self) -> int:
        return 1 if self.photometric in MONOCHROME else 3


@dataclass(frozen=True)
class _Volume:
    """A volume's files in z order (one multi-frame file, or the slices) and its info."""

    planes: list[_Plane]
    info: ImageInfo
    folder: Path | None


def probe_dicom_volume(path: Path) -> ImageInfo:
    """The :class:`ImageInfo` of a series folder or multi-frame file, from headers only (see the module doc)."""
    return _plan(Path(path)).info


def read_dicom_volume(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """A series folder or multi-frame file as (C, z, y, x) modality values and its :class:`ImageInfo`."""
    volume = _plan(Path(path))
    info = volume.info
    z, y, x = info.spatial_shape
    pixels = np.empty((z, y, x, info.channels) if info.channels > 1 else (z, y, x), dtype=info.dtype)
    start = 0
    for plane in volume.planes:
        with _quiet_pydicom(), _slice_of(volume.folder, plane.path):
            dataset = _read_dataset(plane.path)
            stored = _decode(plane.path, dataset, multi_frame=True)
            stack = stored if plane.frames > 1 else stored[None]
            expected = (plane.frames, y, x, *((info.channels,) if info.channels > 1 else ()))
            if stack.shape != expected:
                raise BadImageFile(plane.path, f"it decodes to shape {stack.shape}, but its header says {expected}")
            if stack.dtype.kind == "f":  # headers read without pixels cannot tell float pixel data apart
                raise BadImageFile(plane.path, "it holds float pixel data, which volumes do not support")
            values = _modality_values(plane.path, dataset, stack) if info.dtype.kind == "f" else stack
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise BadImageFile(plane.path, "its rescaled values hold NaN or infinity")
        pixels[start : start + plane.frames] = values
        start += plane.frames
    channel_first = np.moveaxis(pixels, -1, 0) if info.channels > 1 else pixels[None]
    return np.ascontiguousarray(channel_first), info


# --- headers -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _slice_of(folder: Path | None, path: Path) -> Iterator[None]:
    """A slice's :class:`BadImageFile` becomes the series folder's: the whole series is left out."""
    try:
        yield
    except BadImageFile as error:
        if folder is None:
            raise
        raise BadImageFile(folder, f"its slice {path.name} cannot be read: {error.reason}") from None


def _plan(path: Path) -> _Volume:
    if path.is_dir():
        return _series(path)
    if not path.is_file():
        raise BadImageFile(path, "file not found")
    return _multi_frame(path, None)


def _multi_frame(path: Path, folder: Path | None) -> _Volume:
    with _quiet_pydicom(), _slice_of(folder, path):
        dataset = _read_dataset(path, stop_before_pixels=True)
        plane = _header(path, dataset)
        if plane.frames == 1:
            raise UserError(
                f"{path} is a single-frame (2D) DICOM image but {SPATIAL_FLAG}=3: put the slices of each series in "
                f"a folder of their own (one folder is one volume), or set {SPATIAL_FLAG}=2 for 2D images"
            )
        affine = _multi_frame_affine(dataset, plane)
    return _Volume([plane], _info(folder or path, [plane], plane.frames, affine), folder)


def _series(folder: Path) -> _Volume:
    files = series_slices(folder)
    if not files:
        raise BadImageFile(folder, f"is a directory holding no DICOM slices ({', '.join(DICOM_SUFFIXES)} files)")
    planes = []
    for file in files:
        with _quiet_pydicom(), _slice_of(folder, file):
            planes.append(_header(file, _read_dataset(file, stop_before_pixels=True)))
    if len(planes) == 1 and planes[0].frames > 1:  # a folder holding one multi-frame file
        return _multi_frame(files[0], folder)
    _check_one_volume(folder, planes)
    ordered = _ordered(folder, planes)
    return _Volume(ordered, _info(folder, ordered, len(ordered), _series_affine(ordered)), folder)


def _header(path: Path, dataset: Dataset) -> _Plane:
    """The facts of one file; a garbled element makes it a bad file."""
    try:
        photometric = _photometric(dataset)
        if photometric not in (*MONOCHROME, *RGB_LIKE):
            supported = ", ".join((*MONOCHROME, *RGB_LIKE))
            raise BadImageFile(
                path, f"photometric interpretation {photometric!r} is not supported in volumes (supported: {supported})"
            )
        frames = _number_of_frames(dataset)
        rescaled = photometric in MONOCHROME and (
            bool(dataset.get("ModalityLUTSequence"))
            or any(_rescale(dataset, frame) != (1.0, 0.0) for frame in range(frames))
        )
        instance = dataset.get("InstanceNumber")
        return _Plane(
            path=path,
            frames=frames,
            rows=int(dataset.get("Rows") or 0),
            columns=int(dataset.get("Columns") or 0),
            photometric=photometric,
            stored=_stored_dtype(path, dataset),
            series=str(dataset.get("SeriesInstanceUID", "")),
            rescaled=rescaled,
            position=_floats(_frame_value(dataset, 0, "PlanePositionSequence", "ImagePositionPatient"), 3),
            orientation=_floats(_frame_value(dataset, 0, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
            spacing=_floats(_frame_value(dataset, 0, "PixelMeasuresSequence", "PixelSpacing"), 2),
            instance=None if instance in (None, "") else int(instance),
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise BadImageFile(path, f"invalid image header element ({_detail(error, dataset)})") from None


def _stored_dtype(path: Path, dataset: Dataset) -> np.dtype:
    bits = int(dataset.get("BitsAllocated") or 0)
    if bits == 1:
        return np.dtype(np.bool_)
    if bits not in (8, 16, 32, 64):
        raise BadImageFile(path, f"Bits Allocated {bits} is not supported (expected 1, 8, 16, 32 or 64)")
    signed = int(dataset.get("PixelRepresentation") or 0) == 1
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _frame_value(dataset: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """``keyword`` for ``frame``: from the per-frame, then the shared functional group ``sequence`` (enhanced
    files), else the dataset's own element; None without any."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = dataset.get(groups) or []
        if len(items) > index:
            inner = items[index].get(sequence) or []
            if len(inner) > 0 and keyword in inner[0]:
                return inner[0][keyword].value
    return dataset.get(keyword)


def _rescale(dataset: Dataset, frame: int) -> tuple[float, float]:
    slope = _frame_value(dataset, frame, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _frame_value(dataset, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    return (1.0 if slope in (None, "") else float(slope)), (0.0 if intercept in (None, "") else float(intercept))


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value in (None, ""):
        return None
    items = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    values = tuple(float(item) for item in items)
    if len(values) != count or not np.isfinite(values).all():
        raise ValueError(f"expected {count} finite numbers, got {len(values)}")
    return values


def _modality_values(path: Path, dataset: Dataset, stack: np.ndarray) -> np.ndarray:
    """(frames, y, x) stored values -> float32 modality values, per frame."""
    try:
        if dataset.get("ModalityLUTSequence"):
            return np.asarray(apply_modality_lut(stack, dataset), dtype=np.float32)
        rescales = np.array([_rescale(dataset, frame) for frame in range(stack.shape[0])], dtype=np.float64)
    except MemoryError:
        raise
    except Exception as error:  # a garbled Rescale Slope / Modality LUT
        detail = _detail(error, dataset)
        raise BadImageFile(path, f"invalid Rescale Slope / Intercept or Modality LUT ({detail})") from None
    shape = (-1,) + (1,) * (stack.ndim - 1)
    values = stack.astype(np.float64) * rescales[:, 0].reshape(shape) + rescales[:, 1].reshape(shape)
    return values.astype(np.float32)


# --- one volume ----------------------------------------------------------------------------------------------


def _check_one_volume(folder: Path, planes: list[_Plane]) -> None:
    """The slices of ``folder`` form one volume; else a UserError naming two files that disagree."""
    multi = next((plane for plane in planes if plane.frames > 1), None)
    if multi is not None and len(planes) > 1:
        raise UserError(
            f"{folder} holds the multi-frame file {multi.path.name} among {len(planes) - 1} other DICOM files: a "
            "series folder holds single-frame slices of one volume; move the multi-frame file to a folder of its own"
        )
    one_volume = "keep one volume's slices"
    checks = (
        (lambda plane: plane.series, "two series (different SeriesInstanceUIDs)", "put each series in its own folder"),
        (lambda plane: (plane.rows, plane.columns), "slices of different sizes", one_volume),
        (lambda plane: (plane.stored, plane.photometric), "slices of different pixel types", one_volume),
    )
    for key, what, fix in checks:
        first = planes[0]
        odd = next((plane for plane in planes if key(plane) != key(first)), None)
        if odd is not None:
            detail = f" ({first.rows}x{first.columns} vs {odd.rows}x{odd.columns})" if "sizes" in what else ""
            raise UserError(
                f"{folder} holds {what}: {first.path.name} and {odd.path.name}{detail}; a folder is one volume: {fix}"
            )


def _ordered(folder: Path, planes: list[_Plane]) -> list[_Plane]:
    """The slices along the normal by position (ITK / GDCM's order), else by InstanceNumber."""
    if len(planes) == 1:
        return planes
    if all(plane.position is not None and plane.orientation is not None for plane in planes):
        first = planes[0]
        assert first.orientation is not None
        odd = next(
            (p for p in planes if not np.allclose(p.orientation, first.orientation, atol=ORIENTATION_TOLERANCE)), None
        )
        if odd is not None:
            raise UserError(
                f"{folder} holds slices of different orientations ({first.path.name} and {odd.path.name}), e.g. a "
                "localizer among a series: a folder is one volume; move the other slices out"
            )
        keys = [float(np.dot(plane.position, _normal(first.orientation))) for plane in planes]
    elif all(plane.instance is not None for plane in planes):
        keys = [float(plane.instance) for plane in planes]  # type: ignore[arg-type]
    else:
        lacking = [plane.path.name for plane in planes if plane.position is None and plane.instance is None]
        raise BadImageFile(
            folder,
            f"its slices cannot be ordered: {', '.join(lacking[:MAX_NAMES]) or 'some'} lack ImagePositionPatient / "
            "ImageOrientationPatient and InstanceNumber",
        )
    order = sorted(range(len(planes)), key=lambda index: keys[index])
    for before, after in zip(order, order[1:]):
        if keys[after] - keys[before] < POSITION_TOLERANCE_MM:
            raise UserError(
                f"{folder} holds two slices at one position ({planes[before].path.name} and "
                f"{planes[after].path.name}), e.g. several echoes or time points: a folder is one volume; keep one "
                "of them per position"
            )
    return [planes[index] for index in order]


def _normal(orientation: Sequence[float]) -> np.ndarray:
    return np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))


def _info(path: Path, planes: list[_Plane], depth: int, affine: np.ndarray | None) -> ImageInfo:
    from innerssl.data.biapy_layout import ImageInfo, _output_dtype

    first = planes[0]
    stored = np.dtype(np.float32) if any(plane.rescaled for plane in planes) else first.stored
    dtype, dtype_max = _output_dtype(path, stored)
    spatial = (depth, first.rows, first.columns)
    channels = first.channels
    source_shape = (*spatial, channels) if channels > 1 else spatial
    as_tuple = None if affine is None else tuple(tuple(float(value) for value in row) for row in affine)
    return ImageInfo((channels, *spatial), dtype, dtype_max, "ZYXC" if channels > 1 else "ZYX", source_shape, as_tuple)


def _affine(
    first: Sequence[float],
    last: Sequence[float] | None,
    orientation: Sequence[float],
    spacing: Sequence[float],
    depth: int,
    step: float,
) -> np.ndarray:
    """(z, y, x, 1) -> RAS mm; z from the first to the last position, else ``step`` mm along the normal."""
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    if last is not None and depth > 1:
        z_step = (np.asarray(last) - np.asarray(first)) / (depth - 1)
    else:
        z_step = _normal(orientation) * step
    affine = np.eye(4)
    affine[:3, 0] = z_step
    affine[:3, 1] = column * spacing[0]  # PixelSpacing: between rows (y), then between columns (x)
    affine[:3, 2] = row * spacing[1]
    affine[:3, 3] = first
    return LPS_TO_RAS @ affine


def _series_affine(planes: list[_Plane]) -> np.ndarray | None:
    first, last = planes[0], planes[-1]
    if first.position is None or first.orientation is None or last.position is None:
        return None
    return _affine(first.position, last.position, first.orientation, first.spacing or (1.0, 1.0), len(planes), 1.0)


def _multi_frame_affine(dataset: Dataset, plane: _Plane) -> np.ndarray | None:
    """From the per-frame positions of an enhanced file (first and last frame, when they advance along the normal),
    else from a classic file's single position and SpacingBetweenSlices; None without positions."""
    frames, orientation, spacing = plane.frames, plane.orientation, plane.spacing or (1.0, 1.0)
    try:
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
        positions = [
            _floats(_frame_value(dataset, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
            for frame in range(frames if len(per_frame) == frames else 1)
        ]
        between = _floats(_frame_value(dataset, 0, "PixelMeasuresSequence", "SpacingBetweenSlices"), 1)
    except (ValueError, TypeError, AttributeError):
        return None  # the pixels are still usable; only where they lie is unknown
    if orientation is None or any(position is None for position in positions):
        return None
    if len(positions) > 1:
        along = np.diff([float(np.dot(position, _normal(orientation))) for position in positions])
        if not (np.all(along > 0) or np.all(along < 0)):
            return None  # several stacks or an unordered file: no single step describes it
        return _affine(positions[0], positions[-1], orientation, spacing, frames, 1.0)  # type: ignore[arg-type]
    return _affine(positions[0], None, orientation, spacing, frames, between[0] if between else 1.0)  # type: ignore[arg-type]

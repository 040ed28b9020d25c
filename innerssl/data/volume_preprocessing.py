"""MONAI's deterministic preprocessing of volumes, applied once per image when a split is loaded, and undone for
written predictions.

MONAI's self-supervised and UNETR tutorials run ``Orientationd``, ``Spacingd``, ``ScaleIntensityRanged``,
``CropForegroundd`` and ``SpatialPadd`` before the random ROI sampling. :class:`VolumePreprocessing` runs the same
steps, in that order and each optional, with MONAI's transforms on MetaTensors, once per image in
:func:`~innerssl.data.patch_datamodule.load_split`: the in-memory images are the cache (as MONAI's
CacheDataset keeps the deterministic part), and the random part, patches and flips, stays per sample.

- ``orientation`` (``--orientation``, e.g. RAS): reorder and flip the voxel axes to these axis codes (MONAI's
  ``Orientation``). Needs a NIfTI file's affine.
- ``spacing`` (``--spacing``, mm): resample to this voxel size (``Spacing``; bilinear for images and restoration
  targets, nearest for label maps). The flag is z,y,x like ``--patch_size`` and every per-axis flag of innerssl;
  :attr:`VolumePreprocessing.spacing` holds it in MONAI's ``pixdim`` order, the NIfTI voxel axes (i, j, k) =
  (x, y, z) after the orientation (the tutorial's ``pixdim=(1.5, 1.5, 2.0)`` is ``--spacing=2,1.5,1.5``). Needs
  NIfTI.
- ``intensity_window`` (``--intensity_window=low,high``, e.g. the tutorial's CT window -57,164): low -> 0,
  high -> 1, clipped to [0, 1] (``ScaleIntensityRange``). It replaces ``--normalisation``; without a window
  the normalisation runs in this place instead (after resampling, before the crop, as MONAI's order has it).
- ``crop_foreground`` (``--crop_foreground``, ``--crop_margin``): crop to the bounding box of the voxels above the
  image's minimum, plus the margin, never past the volume (``CropForeground``); a volume without such voxels
  is kept whole.
- ``pad_to`` (``--pad_to_patch``): zero-pad axes shorter than the patch up to it, evenly on both sides
  (``SpatialPad``). Without it such axes are usable too: patches and tiles reflection-pad them at their end.

Axes: innerssl's arrays are (C, z, y, x) with (z, y, x) = NIfTI's (k, j, i) (see
:mod:`innerssl.data.biapy_layout`), MONAI's are (C, i, j, k) against the affine; 3D images are transposed to
MONAI's order for the steps and back. 2D images take the window, the crop and the padding only.

Labels (segmentation) and restoration targets take the same geometric steps as their image (the crop box is the
image's); label maps stay int64. :class:`VolumeGeometry` keeps MONAI's record of the geometric steps
(``applied_operations``) so that :meth:`VolumeGeometry.restore` takes a prediction on the preprocessed grid back
to the source file's grid, exactly through crop, padding and orientation, by resampling through spacing (nearest
for label maps): a written prediction has the source file's shape and takes its affine. Metrics are computed on
the preprocessed grid, as the tutorials' validation does.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from innerssl.errors import UserError

if TYPE_CHECKING:
    from monai.data import MetaTensor

logger = logging.getLogger(__name__)

__all__ = ["VolumeGeometry", "VolumePreprocessing", "read_affine"]

ORIENTATION_FLAG = "--orientation"
SPACING_FLAG = "--spacing"
WINDOW_FLAG = "--intensity_window"
CROP_FLAG = "--crop_foreground"
MARGIN_FLAG = "--crop_margin"
PAD_FLAG = "--pad_to_patch"
AXIS_PAIRS = ("LR", "AP", "SI")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

_WIDER = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64, np.dtype(np.bool_): np.uint8}
"""Types torch has few operations for (padding, resampling), held in a wider one (the values are kept)."""

Intensity = Callable[[np.ndarray], np.ndarray]
"""A float32 array from a channel-first array: the run's normalisation of one file."""


@dataclass(frozen=True, eq=False)  # identity: its arrays and records have no useful equality
class VolumeGeometry:
    """How one image was preprocessed: MONAI's record of its geometric steps, to undo them on predictions."""

    operations: tuple[dict[str, Any], ...]
    """MONAI's ``applied_operations`` of the image (instance ids cleared, so any process can invert them)."""
    affine: np.ndarray
    """The preprocessed volume's affine, voxel (i, j, k) -> world (MONAI's order, as the NIfTI writer uses)."""
    source_shape: tuple[int, ...]
    """The source file's spatial shape, innerssl's axis order."""
    spatial_dims: int

    def restore(self, prediction: Tensor, labels: bool) -> Tensor:
        """``prediction`` on the preprocessed grid back on the source grid: ``(C, *spatial)`` float, or a
        ``(*spatial)`` label map when ``labels`` (resampled nearest; it stays int64)."""
        if not self.operations:
            return prediction
        from monai.data import MetaTensor
        from monai.transforms.utils import convert_applied_interp_mode

        array = prediction.detach().cpu()
        array = (array[None] if labels else array).to(torch.float32)
        operations = copy.deepcopy(list(self.operations))
        if labels:
            operations = convert_applied_interp_mode(operations, mode="nearest", align_corners=None)
        volume = MetaTensor(_to_monai(array, self.spatial_dims), affine=torch.as_tensor(self.affine))
        volume.applied_operations = operations
        for operation in reversed(self.operations):
            volume = _inverter(str(operation["class"])).inverse(volume)
        restored = _from_monai(volume.as_tensor(), self.spatial_dims).contiguous()
        if tuple(restored.shape[1:]) != self.source_shape:
            raise RuntimeError(f"restored shape {tuple(restored.shape[1:])} is not the source's {self.source_shape}")
        return restored[0].round().to(torch.int64) if labels else restored


@dataclass(frozen=True)
class Preprocessed:
    image: Tensor
    target: Tensor | None
    geometry: VolumeGeometry


@dataclass(frozen=True)
class VolumePreprocessing:
    """The deterministic steps of MONAI's tutorials, each optional (see the module docstring); all off by
    default, and then :attr:`active` is False and loading is what it was without them."""

    spatial_dims: int = 3
    orientation: str | None = None
    spacing: tuple[float, float, float] | None = None
    intensity_window: tuple[float, float] | None = None
    crop_foreground: bool = False
    crop_margin: int = 0
    pad_to: tuple[int, ...] | None = None
    """innerssl's axis order, like ``--patch_size``."""

    def __post_init__(self) -> None:
        if self.orientation is not None:
            object.__setattr__(self, "orientation", _check_orientation(self.orientation))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _check_spacing(self.spacing))
        if self.intensity_window is not None:
            object.__setattr__(self, "intensity_window", _check_window(self.intensity_window))
        if self.spatial_dims == 2 and (self.orientation is not None or self.spacing is not None):
            flag = ORIENTATION_FLAG if self.orientation is not None else SPACING_FLAG
            raise UserError(f"{flag} needs NIfTI volumes and --spatial_dims=3: drop it for 2D images")
        if isinstance(self.crop_margin, bool) or not isinstance(self.crop_margin, int) or self.crop_margin < 0:
            raise UserError(f"{MARGIN_FLAG}={self.crop_margin} must be whole voxels >= 0, e.g. 2")
        if self.crop_margin and not self.crop_foreground:
            raise UserError(
                f"{MARGIN_FLAG}={self.crop_margin} only applies with {CROP_FLAG}: add it or drop the margin"
            )
        if self.pad_to is not None and len(self.pad_to) != self.spatial_dims:
            raise ValueError(f"pad_to needs {self.spatial_dims} sizes, got {self.pad_to}")

    @classmethod
    def from_parameters(cls, parameters: Any, patch_size: Sequence[int]) -> VolumePreprocessing:
        """From a run's PatchDataParameters. A window refuses a ``--normalisation`` / ``--percentile_clip``
        given besides the config's own: the window replaces it, and a run asking for both is ambiguous."""
        window = _floats(parameters.intensity_window)
        if window:
            declared = type(parameters).param
            for name in ("normalisation", "percentile_clip"):
                value = getattr(parameters, name)
                if value != declared[name].default:
                    raise UserError(
                        f"{WINDOW_FLAG} scales intensities to [0, 1] itself, replacing --{name}: drop "
                        f"--{name}={value} or the window"
                    )
            if len(window) != 2:
                raise UserError(_window_hint(window))
        spacing = _floats(parameters.spacing)
        if spacing and len(spacing) not in (1, 3):
            raise UserError(_spacing_hint(spacing))
        orientation = str(parameters.orientation or "").strip()
        return cls(
            spatial_dims=int(parameters.spatial_dims),
            orientation=orientation or None,
            # The flag is z,y,x (as --patch_size); MONAI's pixdim is x,y,z.
            spacing=(tuple(reversed(spacing * 3 if len(spacing) == 1 else spacing)) if spacing else None),  # type: ignore[arg-type]
            intensity_window=(window[0], window[1]) if window else None,
            crop_foreground=bool(parameters.crop_foreground),
            crop_margin=int(parameters.crop_margin),
            pad_to=tuple(int(size) for size in patch_size) if parameters.pad_to_patch else None,
        )

    @property
    def active(self) -> bool:
        return any(
            (self.orientation, self.spacing, self.intensity_window, self.crop_foreground, self.pad_to is not None)
        )

    @property
    def needs_affine(self) -> bool:
        return self.orientation is not None or self.spacing is not None

    def describe(self) -> str:
        """One line for the log and a settings key for derived data; '' when nothing is on."""
        steps = []
        if self.orientation:
            steps.append(f"orientation {self.orientation}")
        if self.spacing:
            steps.append(f"spacing {','.join(f'{value:g}' for value in reversed(self.spacing))} mm (z,y,x)")
        if self.intensity_window:
            steps.append(f"window {self.intensity_window[0]:g},{self.intensity_window[1]:g} -> [0, 1]")
        if self.crop_foreground:
            steps.append(f"foreground crop (margin {self.crop_margin})")
        if self.pad_to is not None:
            steps.append(f"padding to {'x'.join(map(str, self.pad_to))}")
        return ", ".join(steps)

    def apply(
        self,
        image: np.ndarray,
        image_intensity: Intensity,
        target: np.ndarray | None = None,
        target_intensity: Intensity | None = None,
        affine: np.ndarray | None = None,
    ) -> Preprocessed:
        """One image ``(C, *spatial)`` (raw pixels) and its target: a restoration image ``(C_t, *spatial)``
        with its own ``target_intensity``, or without one a label map ``(*spatial)`` (nearest, int64).

        ``image_intensity`` is the run's normalisation, used where there is no window; ``affine`` the NIfTI
        affine, required by orientation and spacing."""
        from monai.data import MetaTensor
        from monai.transforms import CropForeground, Orientation, ScaleIntensityRange, Spacing, SpatialPad

        if self.needs_affine and affine is None:
            raise ValueError("orientation and spacing need the volume's affine")
        if image.ndim != self.spatial_dims + 1:
            raise ValueError(f"expected (C, *spatial) with {self.spatial_dims} spatial axes, got {image.shape}")
        labels = target is not None and target_intensity is None
        world = torch.as_tensor(np.eye(4) if affine is None else affine, dtype=torch.float64)

        def volume(array: np.ndarray) -> MetaTensor:
            values = torch.from_numpy(np.ascontiguousarray(array.astype(_WIDER.get(array.dtype, array.dtype))))
            return MetaTensor(
                _to_monai(values, self.spatial_dims).contiguous(), affine=world
            )  # resampling is slower on views

        pixels = volume(image)
        truth = None if target is None else volume(target[None] if labels else target)
        if self.orientation is not None:
            orient = Orientation(axcodes=self.orientation, labels=None)
            pixels = orient(pixels)
            truth = None if truth is None else orient(truth)
        if self.spacing is not None:
            resample = Spacing(pixdim=self.spacing, mode="bilinear")
            pixels = resample(pixels)
            truth = None if truth is None else resample(truth, mode="nearest" if labels else "bilinear")
        if self.intensity_window is not None:
            low, high = self.intensity_window
            scale = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)

            def window(values: np.ndarray) -> np.ndarray:
                return np.asarray(scale(values.astype(np.float32)))

            image_intensity = window
            target_intensity = None if labels else window
        # numpy, as loading without preprocessing normalises (torch's sorts are slower on a busy CPU)
        pixels = _with_values(pixels, image_intensity(pixels.as_tensor().numpy()))
        if truth is not None and target_intensity is not None:
            truth = _with_values(truth, target_intensity(truth.as_tensor().numpy()))
        if self.crop_foreground:
            box = _foreground_box(pixels.as_tensor().numpy(), self.crop_margin)
            if box is not None:
                cropper = CropForeground(allow_smaller=True)
                pixels = cropper.crop_pad(pixels, *box)
                truth = None if truth is None else cropper.crop_pad(truth, *box)
            else:
                logger.warning("%s: the image has no voxel above its minimum: no foreground crop", CROP_FLAG)
        if self.pad_to is not None:
            size = self.pad_to[::-1] if self.spatial_dims == 3 else self.pad_to
            padder = SpatialPad(spatial_size=size, method="symmetric", mode="constant")
            pixels = padder(pixels)
            truth = None if truth is None else padder(truth)
        out_image = _from_monai(pixels.as_tensor(), self.spatial_dims).to(torch.float32).contiguous()
        out_target = None
        if truth is not None:
            values = _from_monai(truth.as_tensor(), self.spatial_dims).contiguous()
            out_target = values[0].round().to(torch.int64) if labels else values.to(torch.float32)
        geometry = VolumeGeometry(
            operations=tuple(_without_ids(pixels.applied_operations)),
            affine=pixels.affine.numpy().astype(np.float64),
            source_shape=tuple(int(size) for size in image.shape[1:]),
            spatial_dims=self.spatial_dims,
        )
        return Preprocessed(out_image, out_target, geometry)


def read_affine(path: Path) -> np.ndarray:
    """A NIfTI file's affine, voxel (i, j, k) -> world (nibabel's, as MONAI's NibabelReader gives it)."""
    import nibabel

    name = path.name.lower()
    if not name.endswith(NIFTI_SUFFIXES):
        raise UserError(
            f"{ORIENTATION_FLAG} and {SPACING_FLAG} need each volume's affine, which {path.name} (not NIfTI) does not "
            "store: drop them for this dataset, or convert it to .nii.gz"
        )
    return np.asarray(nibabel.load(path).affine, dtype=np.float64)  # type: ignore[attr-defined]


# --- helpers -----------------------------------------------------------------------------------------------------


def _to_monai(array: Tensor, spatial_dims: int) -> Tensor:
    """innerssl's (C, z, y, x) = (C, k, j, i) as MONAI's (C, i, j, k); 2D images stay (C, y, x)."""
    return array.permute(0, 3, 2, 1) if spatial_dims == 3 else array


def _from_monai(array: Tensor, spatial_dims: int) -> Tensor:
    return array.permute(0, 3, 2, 1) if spatial_dims == 3 else array


def _with_values(volume: MetaTensor, values: np.ndarray) -> MetaTensor:
    """``values`` with ``volume``'s affine and record of applied operations."""
    from monai.data import MetaTensor

    result = MetaTensor(torch.from_numpy(np.ascontiguousarray(values)), meta=copy.copy(volume.meta))
    result.applied_operations = volume.applied_operations
    return result


def _foreground_box(values: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(start, end) of the voxels above the image's minimum (any channel), widened by ``margin`` within the
    image: CropForeground's box with ``allow_smaller``, found in numpy; None when there are none."""
    inside = np.any(values > values.min(), axis=0)
    if not inside.any():
        return None
    starts, ends = [], []
    for axis in range(inside.ndim):
        present = np.flatnonzero(np.any(inside, axis=tuple(other for other in range(inside.ndim) if other != axis)))
        starts.append(max(int(present[0]) - margin, 0))
        ends.append(min(int(present[-1]) + 1 + margin, inside.shape[axis]))
    return np.asarray(starts), np.asarray(ends)


def _without_ids(operations: Any) -> Any:
    """MONAI's record with the transform ids cleared: they name objects of one process (TraceKeys.NONE skips
    the check), and VolumeGeometry inverts with fresh transforms, maybe in another process."""
    from monai.utils import TraceKeys

    if isinstance(operations, list | tuple):
        return [_without_ids(operation) for operation in operations]
    if isinstance(operations, dict):
        return {
            key: (TraceKeys.NONE if key == TraceKeys.ID else _without_ids(value)) for key, value in operations.items()
        }
    return copy.deepcopy(operations)


def _inverter(name: str) -> Any:
    """A transform whose ``inverse`` undoes a recorded operation of class ``name``."""
    from monai.transforms import CropForeground, Orientation, SpatialPad, SpatialResample

    inverters: dict[str, Callable[[], Any]] = {
        "Orientation": lambda: Orientation(axcodes="RAS", labels=None),
        "SpatialResample": SpatialResample,
        "CropForeground": CropForeground,
        "SpatialPad": lambda: SpatialPad(spatial_size=1),
    }
    if name not in inverters:
        raise ValueError(f"no inverse for the recorded transform {name}")
    return inverters[name]()


def _floats(values: Any) -> list[float]:
    return [float(value) for value in (values or [])]


def _check_orientation(code: str) -> str:
    letters = code.strip().upper()
    hint = f"{ORIENTATION_FLAG}={code} must be 3 letters, one from each of L/R, A/P and S/I, e.g. RAS"
    if len(letters) != 3 or sorted(next((p for p in AXIS_PAIRS if c in p), c) for c in letters) != sorted(AXIS_PAIRS):
        raise UserError(hint)
    return letters


def _spacing_hint(values: Sequence[float]) -> str:
    shown = ",".join(f"{value:g}" for value in values)
    return (
        f"{SPACING_FLAG}={shown} needs 1 or 3 positive voxel sizes in mm, z,y,x as --patch_size (MONAI's "
        "pixdim x,y,z reversed), e.g. 2,1.5,1.5"
    )


def _check_spacing(values: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(value) for value in values)
    if len(spacing) != 3 or not all(np.isfinite(value) and value > 0 for value in spacing):
        raise UserError(_spacing_hint(spacing))
    return spacing  # type: ignore[return-value]


def _window_hint(values: Sequence[float]) -> str:
    shown = ",".join(f"{value:g}" for value in values)
    return f"{WINDOW_FLAG}={shown} needs two intensities low,high with low < high, e.g. -57,164"


def _check_window(values: Sequence[float]) -> tuple[float, float]:
    window = tuple(float(value) for value in values)
    if len(window) != 2 or not all(np.isfinite(window)) or not window[0] < window[1]:
        raise UserError(_window_hint(window))
    return window  # type: ignore[return-value]

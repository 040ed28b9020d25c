"""The data group of dense-network runs (restoration pretext tasks, segmentation): a folder of 2D images or 3D
volumes, intensity normalisation, random training patches and tiled whole-image evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import param

from innerssl.data.normalisation import MODES, Normalisation
from innerssl.data.tiling import check_patch_size
from innerssl.errors import UserError

logger = logging.getLogger(__name__)

LAYOUTS_DOC = (
    "BiaPy's layout (train/x, optional train/y, val/x, test/x), the Medical Segmentation Decathlon's "
    "(imagesTr with labelsTr), or a flat folder of images (its images/ subfolder if it has one)"
)


class PatchDataParameters(param.Parameterized):
    """Images or volumes, their normalisation, and the patches networks train on."""

    group_order: ClassVar[int] = 20
    group_title: ClassVar[str] = "Data"
    parameter_aliases: ClassVar[dict[str, str]] = {"samples_per_volume": "patches_per_image"}
    """MONAI's names (RandSpatialCropSamples' num_samples). Not roi_size: MONAI's is x,y,z, --patch_size z,y,x."""

    local_dataset: str | None = param.String(None, allow_None=True, doc=f"Folder of the dataset: {LAYOUTS_DOC}.")

    datalist: str | None = param.String(
        None,
        allow_None=True,
        doc="Decathlon-style JSON datalist (training / validation / test entries with image and optional label, "
        "paths relative to the JSON file) listing the dataset instead of --local_dataset's folder layout; enough on "
        "its own, and with --local_dataset that folder must hold the JSON.",
    )

    dataset_cache_dir: str | None = param.String(
        None,
        allow_None=True,
        doc="Where derived data (the on-disk degraded copies <dataset>_ssl_source) are written; default "
        "~/.cache/innerssl.",
    )

    spatial_dims: int = param.Integer(
        2,
        bounds=(2, 3),
        doc="2 for images (y, x[, c]), 3 for volumes (z, y, x[, c]); files that do not fit are refused.",
    )

    in_channels: int | None = param.Integer(
        None,
        allow_None=True,
        bounds=(1, None),
        doc="Channels the network takes; None: the files' own count (all files must share it). 1 converts RGB files "
        "to gray (ITU-R 601 luminance) and 3 repeats gray ones, for datasets that mix the two (NIH holds a few RGBA "
        "PNGs among its gray ones).",
    )

    patch_size: list[int] = param.List(
        [64],
        item_type=int,
        doc="Training patch (and tile) size: one value for every axis or one per axis (z,y,x in 3D), e.g. 16,32,32.",
    )

    patches_per_image: int = param.Integer(
        16, bounds=(1, None), doc="Random training patches drawn from each training image per epoch."
    )

    patches_per_epoch: int | None = param.Integer(
        None,
        allow_None=True,
        bounds=(1, None),
        doc="Training patches per epoch in all, spread over the training images (ceil(N / images) each); replaces "
        "--patches_per_image, so that a run on fewer images (--num_training_images) trains as many steps.",
    )

    batch_size: int = param.Integer(8, bounds=(1, None), doc="Training patches per batch and process.")

    val_fraction: float = param.Number(
        0.1, bounds=(0, 0.9), doc="Fraction of training images carved as validation where the dataset has no val/."
    )

    test_fraction: float = param.Number(
        0.1,
        bounds=(0, 0.9),
        doc="Fraction of images carved as test where a Decathlon or flat dataset has no test set (BiaPy "
        "datasets use their own test/ or have none).",
    )

    normalisation: str = param.Selector(
        objects=list(MODES),
        default="div",
        doc="Intensities: div (divide by the type's maximum, e.g. 65535 for 16-bit), percentile (per image to [0, 1] "
        "between --percentile_clip percentiles) or zero_mean_unit_variance (per image).",
    )

    percentile_clip: str = param.String(
        "", doc="Low,high percentiles of --normalisation=percentile (default 0.5,99.5)."
    )

    orientation: str = param.String(
        "",
        doc="MONAI preprocessing (once per volume, at load): reorient NIfTI volumes to these axis codes, e.g. RAS "
        "(one of L/R, A/P, S/I each); empty keeps the file's axes. 3D only. Predictions are written back in the "
        "source file's grid.",
    )

    spacing: list[float] = param.List(
        [],
        item_type=float,
        doc="Resample NIfTI volumes to this voxel size in mm, z,y,x as --patch_size (MONAI's pixdim x,y,z reversed: "
        "the tutorial's pixdim 1.5,1.5,2.0 is 2,1.5,1.5), or one value for all; bilinear for images, nearest for "
        "labels. Empty: no resampling. 3D only.",
    )

    intensity_window: list[float] = param.List(
        [],
        item_type=float,
        doc="Low,high intensities mapped to 0 and 1, clipped (MONAI's ScaleIntensityRange; the CT tutorial's "
        "-57,164). Replaces --normalisation, so it refuses a --normalisation or --percentile_clip other than the "
        "config's. Empty: --normalisation.",
    )

    crop_foreground: bool = param.Boolean(
        False,
        doc="Crop each image (and its target) to the box of voxels above the image's minimum, once at load (MONAI's "
        "CropForeground, after the window); predictions are padded back to the full size.",
    )

    crop_margin: int = param.Integer(
        0, bounds=(0, None), doc="Voxels kept around the --crop_foreground box (within the image)."
    )

    pad_to_patch: bool = param.Boolean(
        False,
        doc="Zero-pad images with an axis shorter than --patch_size up to it, evenly on both sides, once at load "
        "(MONAI's SpatialPad); predictions are cropped back. Off: patches and tiles reflection-pad such axes.",
    )

    flip: bool = param.Boolean(True, doc="Random flips of training patches along every spatial axis.")

    test_overlap: float = param.Number(
        0.25, bounds=(0, 0.99), doc="Overlap of neighbouring tiles in whole-image validation and test (fraction)."
    )

    test_padding: int = param.Integer(
        0,
        bounds=(0, None),
        doc="Context pixels per tile side that are discarded when tiles are merged (reflection at image borders); "
        "below half the patch.",
    )

    tile_batch_size: int = param.Integer(4, bounds=(1, None), doc="Tiles per network call in whole-image inference.")

    def validate_group(self, check_this_machine: bool) -> None:
        if check_this_machine and self.local_dataset is not None and not Path(self.local_dataset).is_dir():
            if Path(self.local_dataset).suffix.lower() == ".json":
                raise UserError(
                    f"--local_dataset={self.local_dataset} is a JSON file, not a folder: pass it as "
                    f"--datalist={self.local_dataset}"
                )
            raise UserError(f"--local_dataset={self.local_dataset} is not a folder: pass the dataset's folder")
        if check_this_machine and self.datalist is not None:
            datalist = self.datalist_path()
            if datalist is None or not datalist.is_file():
                raise UserError(f"--datalist={self.datalist} is not a file: pass the JSON datalist's path")
        self.patch()
        self.normaliser()
        default_per_image = type(self).param["patches_per_image"].default
        if self.patches_per_epoch is not None and self.patches_per_image != default_per_image:
            raise UserError(
                f"--patches_per_epoch={self.patches_per_epoch} sets the patches per image itself: drop "
                f"--patches_per_image={self.patches_per_image} (or --patches_per_epoch)"
            )
        if self.spatial_dims == 3 and getattr(self, "channels_last", False):
            raise UserError("--channels_last is a memory format of 2D convolutions: drop it with --spatial_dims=3")
        if self.test_padding * 2 >= min(self.patch()):
            raise UserError(
                f"--test_padding={self.test_padding} must be below half the smallest patch side ({min(self.patch())})"
            )

    def patch(self) -> tuple[int, ...]:
        """--patch_size per spatial axis."""
        sizes = list(self.patch_size)
        if len(sizes) not in (1, self.spatial_dims):
            raise UserError(
                f"--patch_size={','.join(map(str, sizes))} needs one value or {self.spatial_dims} (one per axis "
                f"with --spatial_dims={self.spatial_dims})"
            )
        return check_patch_size(tuple(sizes) if len(sizes) > 1 else sizes[0], self.spatial_dims)

    def normaliser(self) -> Normalisation:
        return Normalisation.parse(self.normalisation, self.percentile_clip or None)

    def dataset_root(self) -> Path:
        if self.local_dataset is None:
            raise UserError(
                f"This model needs its dataset: pass --local_dataset=<folder> ({LAYOUTS_DOC}) or --datalist=<JSON>"
            )
        return Path(self.local_dataset)

    def datalist_path(self) -> Path | None:
        """``--datalist``; a relative path with ``--local_dataset`` may be inside that folder (how an Azure ML job,
        whose dataset is mounted, finds it) or relative to the working folder, and must not be both."""
        if self.datalist is None:
            return None
        path = Path(self.datalist)
        if path.is_absolute() or self.local_dataset is None:
            return path
        inside = Path(self.local_dataset) / path
        if inside.is_file() and path.is_file() and inside.resolve() != path.resolve():
            raise UserError(
                f"--datalist={path} names two files, {path.resolve()} and {inside.resolve()} (inside --local_dataset): "
                "pass an absolute path"
            )
        return inside if inside.is_file() else path

    def find_dataset_layout(self, bad_file_log: Any = None) -> Any:
        """The dataset of --local_dataset / --datalist as a BiaPyLayout (innerssl.data.image_layouts.find_layout)."""
        from innerssl.data.image_layouts import find_layout

        datalist = self.datalist_path()
        return find_layout(
            self.dataset_root() if datalist is None else self.local_dataset,
            self.spatial_dims,
            self.val_fraction,
            self.test_fraction,
            getattr(self, "random_seed", 0),
            bad_file_log,
            channels=self.in_channels,
            datalist=datalist,
        )

    def trained_test_images(self, module: Any, datamodule: Any, checkpoint: Path) -> list:
        """The test split's images (``LoadedImage``s), with ``module`` loaded from the run's best (else last)
        checkpoint for the test stage; empty (and said so) where the dataset has no test images."""
        from innerssl.outputs.checkpoints import load_checkpoint

        test_images = list(datamodule.used_images["test"])
        if not test_images:
            logger.info("No test images: no test stage (add root/test/x, or --test_fraction for flat folders)")
            return []
        module.load_state_dict(load_checkpoint(checkpoint, "the run's checkpoint")["state_dict"])
        logger.info("Test stage on %d images with %s", len(test_images), checkpoint)
        return test_images

    def cache_root(self) -> Path:
        return Path(self.dataset_cache_dir) if self.dataset_cache_dir else Path.home() / ".cache" / "innerssl"

"""The data group: which labeled dataset, where its folders are, how splits are carved and labels read, how images
are stored and augmented. Shared by SSL runs (the monitors' dataset) and classifiers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import ClassVar

import param

from innerssl.augment.config import AugmentationConfig, PreprocessConfig, load_augmentation_config
from innerssl.data.cache import CacheSettings
from innerssl.data.datasets.base import DatasetOptions, DatasetSplits
from innerssl.data.datasets.demo import default_cache_dir
from innerssl.data.pipeline import ImageStorage, ImageStream
from innerssl.errors import UserError
from innerssl.eval.metrics import positive_class_weight
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)


BAD_FILE_LOG_NAME = "bad_files.txt"
DECODE_CACHE_FOLDER = "decoded"
"""Subfolder of dataset_cache_dir that holds the decode-once caches, one folder per dataset split and setting."""


class DataParameters(param.Parameterized):
    """Datasets, folders, splits, labels, and the data pipeline (decode cache, augmentation)."""

    group_order: ClassVar[int] = 20
    group_title: ClassVar[str] = "Data"

    linear_head_dataset_name: str | None = param.String(
        None,
        allow_None=True,
        doc="Registered labeled dataset for the linear-head monitor (and for classifiers), e.g. Demo, "
        "CIFAR10, RSNAPneumonia. None: no linear-head monitoring.",
    )

    local_dataset: str | None = param.String(
        None, allow_None=True, doc="Folder of the SSL training dataset (for classifiers: of the labeled dataset)."
    )

    extra_local_dataset_paths: list[str] = param.List(
        [],
        item_type=str,
        doc="Folders of further datasets; the first is the linear-head dataset's folder. Without it, a linear-head "
        "dataset that reads the same kind of folder as the SSL dataset (NIH and NIHBinary, say) uses --local_dataset.",
    )

    dataset_cache_dir: str | None = param.String(
        None,
        allow_None=True,
        doc="Where generated datasets (the embedded demo) and decoded-image caches (<dir>/decoded) are written; "
        "default ~/.cache/innerssl.",
    )

    download_datasets: bool = param.Boolean(
        False, doc="Allow downloading datasets that torchvision can fetch (CIFAR) when they are missing."
    )

    val_fraction: float = param.Number(
        0.1, bounds=(0, 0.9), doc="Fraction of patients put in the validation split, where a dataset has none."
    )

    test_fraction: float = param.Number(
        0.1, bounds=(0, 0.9), doc="Fraction of patients put in the test split, where a dataset has none."
    )

    label_names: list[str] = param.List(
        [],
        item_type=str,
        doc="Findings or label columns to predict (e.g. Pneumonia); empty: the dataset's default.",
    )

    uncertainty_policy: str = param.Selector(
        objects=["zeros", "ones", "ignore"], default="zeros", doc="CheXpert: how uncertain (-1) labels are used."
    )

    frontal_only: bool = param.Boolean(False, doc="CheXpert: use frontal views only.")

    csv_image_column: str = param.String("path", doc="Generic CSV dataset: the column with image paths.")

    folder_patient_pattern: str = param.String(
        DatasetOptions.folder_patient_pattern,
        doc="ImageFolder: regular expression whose first matching group in a file name (without suffix) is the "
        "patient id, so carved splits keep a patient's images together; unmatched files (or an empty pattern) are "
        "one patient each. The default reads Kermany's chest X-ray names (person1234_bacteria_5678, IM-0115-0001).",
    )

    apply_voi_lut: bool = param.Boolean(True, doc="DICOM: apply the file's VOI LUT / window when present.")

    demo_num_images: int = param.Integer(1600, bounds=(10, None), doc="Demo dataset: number of generated images.")

    demo_image_size: int = param.Integer(64, bounds=(16, None), doc="Demo dataset: generated image size in pixels.")

    linear_head_augmentation_config: str = param.String(
        "augmentations/demo_linear_head_augmentations.yaml",
        doc="YAML augmentations of the linear head's training images (its preprocess also applies at eval).",
    )

    image_size: int | None = param.Integer(
        None,
        allow_None=True,
        bounds=(8, None),
        doc="Overrides the augmentation configs' preprocess: resize the shorter side to image_size and "
        "center-crop image_size x image_size (e.g. 64 for a quick CPU run of a 224 px config).",
    )

    decode_cache: bool = param.Boolean(
        True,
        doc="Decode every image once into a memory-mapped cache of fixed-size integer images under "
        "<dataset_cache_dir>/decoded and train from it (rebuilt only when files, labels or cache settings "
        "change); false decodes the files on every access.",
    )

    cache_image_size: int | None = param.Integer(
        None,
        allow_None=True,
        bounds=(8, None),
        doc="Side of the square images the decode cache stores (and, with --augment_on_device, batches are made "
        "of); None: the augmentation configs' preprocess size (resize, else center_crop_size; 256 for the 224 px "
        "chest X-ray configs), else the first image's shorter side.",
    )

    cache_fit: str = param.Selector(
        objects=["crop", "pad"],
        default="crop",
        doc="How images become squares: crop resizes the shorter side and center-crops the longer (the preprocess "
        "does the same); pad resizes the longer side and pads the shorter with zeros (nothing cut off).",
    )

    cache_dtype: str = param.Selector(
        objects=["uint8", "uint16"],
        default="uint8",
        doc="Integer type of the stored pixels: uint8 (8-bit PNG/JPEG sources) or uint16 (keeps more than 8 bits "
        "of DICOM/16-bit PNG depth at twice the size).",
    )

    augment_on_device: bool = param.Boolean(
        True,
        doc="Augment whole batches on the training device (the GPU when training on one) with per-sample random "
        "parameters, after the loader delivered stored integer images; false: the per-sample torchvision pipeline "
        "in the loader workers (slower; for comparison or transforms the batched path lacks).",
    )

    linear_head_batch_size: int = param.Integer(
        256,
        bounds=(1, None),
        doc="Batch size per process of the labeled dataset (the linear head's, the classifier's).",
    )

    def validate_group(self, check_this_machine: bool) -> None:
        if check_this_machine and self.local_dataset is not None and not Path(self.local_dataset).is_dir():
            raise UserError(f"--local_dataset={self.local_dataset} is not a folder: pass the dataset's folder")
        for path in self.extra_local_dataset_paths if check_this_machine else []:
            if not Path(path).is_dir():
                raise UserError(f"--extra_local_dataset_paths entry {path} is not a folder: pass the dataset's folder")
        if self.linear_head_dataset_name is not None:
            DATASETS.get(self.linear_head_dataset_name)

    def dataset_options(self, root_parameter: str, bad_file_log: Path | None = None) -> DatasetOptions:
        return DatasetOptions(
            seed=self.random_seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            label_names=tuple(self.label_names),
            uncertainty_policy=self.uncertainty_policy,  # type: ignore[arg-type]
            frontal_only=self.frontal_only,
            image_column=self.csv_image_column,
            folder_patient_pattern=self.folder_patient_pattern,
            apply_voi_lut=self.apply_voi_lut,
            cache_dir=Path(self.dataset_cache_dir) if self.dataset_cache_dir else None,
            root_parameter=root_parameter,
            bad_file_log=bad_file_log,
            download=self.download_datasets,
            demo={"num_images": self.demo_num_images, "image_size": self.demo_image_size},
        )

    def labeled_dataset_root(self) -> tuple[Path | None, str]:
        """Folder of the labeled dataset and the flag that sets it: the first --extra_local_dataset_paths entry,
        else --local_dataset."""
        if self.extra_local_dataset_paths:
            return Path(self.extra_local_dataset_paths[0]), "--extra_local_dataset_paths"
        return (Path(self.local_dataset) if self.local_dataset else None), "--local_dataset"

    def build_dataset(
        self, name: str, root: Path | None, root_parameter: str, run_folder: Path | None
    ) -> DatasetSplits:
        bad_file_log = run_folder / BAD_FILE_LOG_NAME if run_folder is not None else None
        return DATASETS.get(name)(root, self.dataset_options(root_parameter, bad_file_log))

    def linear_head_splits(self, run_folder: Path | None = None) -> DatasetSplits | None:
        if self.linear_head_dataset_name is None:
            return None
        root, flag = self.labeled_dataset_root()
        splits = self.build_dataset(self.linear_head_dataset_name, root, flag, run_folder)
        if splits.label_info.task == "unlabeled":
            raise UserError(
                f"Dataset {self.linear_head_dataset_name} has no labels: choose a labeled dataset for "
                "--linear_head_dataset_name"
            )
        return splits

    def augmentation(self, parameter: str) -> AugmentationConfig:
        config = load_augmentation_config(getattr(self, parameter), parameter_name=f"--{parameter}")
        if self.image_size is None:
            return config
        return dataclasses.replace(config, preprocess=PreprocessConfig(self.image_size, self.image_size))

    def image_storage(self, configs: list[AugmentationConfig]) -> ImageStorage:
        """How this run's images are stored: slot size from --cache_image_size or the configs' preprocess."""
        sizes = [size for config in configs if (size := preprocess_size(config)) is not None]
        image_size = self.cache_image_size or (max(sizes) if sizes else None)
        root = Path(self.dataset_cache_dir) if self.dataset_cache_dir else default_cache_dir()
        settings = CacheSettings(
            root=root / DECODE_CACHE_FOLDER,
            image_size=image_size,
            fit=self.cache_fit,  # type: ignore[arg-type]
            dtype=self.cache_dtype,  # type: ignore[arg-type]
            num_workers=self.num_workers,
        )
        logger.info(
            "Data pipeline: %s, %s",
            f"decode cache in {settings.root}" if self.decode_cache else "images decoded on every access",
            "augmentation in batches on the training device" if self.augment_on_device else "per-sample augmentation",
        )
        return ImageStorage(settings, decode_cache=self.decode_cache, fixed_size=self.augment_on_device)

    def image_stream(self, config: AugmentationConfig, views: int = 1) -> ImageStream:
        return ImageStream(config, self.in_channels, self.augment_on_device, views=views)

    def positive_weight(self, splits: DatasetSplits, balanced: bool) -> float | None:
        if not balanced or splits.label_info.task != "binary":
            return None
        return positive_class_weight(splits.train.labels)  # type: ignore[attr-defined]


def preprocess_size(config: AugmentationConfig) -> int | None:
    """The square size a config's preprocess works from: its resize, else its center crop, else None."""
    return config.preprocess.resize or config.preprocess.center_crop_size

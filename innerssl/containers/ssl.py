"""SSLContainer: self-supervised pretraining with online linear-head monitoring."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import param
import pytorch_lightning as pl

from innerssl.augment.config import AugmentationConfig, PreprocessConfig, load_augmentation_config
from innerssl.containers.base import Container
from innerssl.data.cache import CacheSettings
from innerssl.data.datamodule import SSLDataModule
from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, UsedDataset
from innerssl.data.datasets.demo import default_cache_dir
from innerssl.data.pipeline import ImageStorage, ImageStream
from innerssl.distributed import effective_learning_rate
from innerssl.errors import UserError
from innerssl.eval.knn import knn_monitor_for
from innerssl.eval.metrics import positive_class_weight
from innerssl.eval.online_linear import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_STATISTICS_MOMENTUM,
    DEFAULT_STEPS_PER_BATCH,
    METRIC_PREFIX,
    online_linear_head_for,
)
from innerssl.networks import ENCODERS, EncoderSpec
from innerssl.networks.options import parse_encoder_options
from innerssl.networks.registry import family_of
from innerssl.networks.weights import IMAGENET, NO_WEIGHTS
from innerssl.optim import OPTIMIZER_NAMES
from innerssl.registry import DATASETS
from innerssl.ssl import SSL_METHODS, ssl_method

logger = logging.getLogger(__name__)

BAD_FILE_LOG_NAME = "bad_files.txt"
DECODE_CACHE_FOLDER = "decoded"
"""Subfolder of dataset_cache_dir that holds the decode-once caches, one folder per dataset split and setting."""


class SSLContainer(Container):
    """Self-supervised pretraining of an image encoder, monitored by a linear head on a labeled dataset."""

    # --- datasets ------------------------------------------------------------------------------------
    ssl_training_dataset_name: str = param.String(
        "Demo", doc="Registered dataset to pretrain on (unlabeled use), e.g. Demo, CIFAR10, NIH."
    )
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

    # --- encoder and method --------------------------------------------------------------------------
    ssl_encoder: str = param.String(
        "resnet50",
        doc="Encoder network: a registered name (resnet18, resnet50, resnet101, densenet121: torchvision), "
        "timm:<model> (any timm model, e.g. timm:vit_tiny_patch16_224, timm:convnext_tiny) or monai:<network> "
        "(resnet10 ... resnet50, vit; 2D or 3D); your own through --config_module (ENCODERS.register).",
    )
    encoder_options: list[str] = param.List(
        [],
        item_type=str,
        doc="Construction options of the encoder as key=value, e.g. img_size=64,patch_size=8 for a timm ViT on "
        "64 px images (tuples as 96x96x96). Recorded in checkpoints, so classifiers and export rebuild the encoder.",
    )
    encoder_weights: str = param.String(
        "none",
        doc="Starting weights of the encoder: none (random), imagenet (torchvision's or timm's own, downloaded on "
        "first use), or a file (a state dict .pt/.pth or .safetensors, with the library's or the encoder's keys). "
        "A 1-channel encoder sums RGB first-layer weights over the channels.",
    )
    in_channels: int = param.Integer(
        1,
        bounds=(1, None),
        doc="Input channels the encoder takes: 1 for radiographs, 3 for RGB, any other count for multi-channel "
        "microscopy (images with one channel are repeated to it).",
    )
    ssl_training_type: str = param.Selector(objects=list(SSL_METHODS), default="BYOL", doc="SSL method.")
    projection_dim: int = param.Integer(256, bounds=(1, None), doc="Output size of the projection head.")
    projection_hidden_dim: int = param.Integer(4096, bounds=(1, None), doc="Hidden size of projection/prediction.")
    byol_base_momentum: float = param.Number(
        0.99, bounds=(0, 1), doc="BYOL: initial EMA momentum of the target network (cosine schedule to 1)."
    )
    simclr_temperature: float = param.Number(0.1, bounds=(1e-4, None), doc="SimCLR: NT-Xent temperature.")
    dino_output_dim: int = param.Integer(
        65536,
        bounds=(2, None),
        doc="DINO: dimensions of the softmax the student matches to the teacher (the head's last layer; "
        "projection_hidden_dim and projection_dim are its MLP width and bottleneck).",
    )
    dino_teacher_temperature: float = param.Number(
        0.04, bounds=(1e-4, None), doc="DINO: teacher softmax temperature (low: sharpened targets)."
    )
    dino_student_temperature: float = param.Number(0.1, bounds=(1e-4, None), doc="DINO: student softmax temperature.")
    dino_base_momentum: float = param.Number(
        0.996, bounds=(0, 1), doc="DINO: initial EMA momentum of the teacher network (cosine schedule to 1)."
    )
    dino_num_local_crops: int = param.Integer(
        6,
        bounds=(0, None),
        doc="DINO multi-crop: small local crops per image that only the student sees, beside the two global views "
        "that teacher and student see (the paper: 6 or 10); 0: two-view DINO.",
    )
    dino_local_crop_size: float = param.Number(
        0.43,
        bounds=(0, None),
        inclusive_bounds=(False, True),
        doc="DINO: side of the local crops, a fraction of the global views' side when at most 1 (0.43: 96 px for "
        "224 px views, 28 px for the 64 px demo), pixels above 1 (e.g. 96). A timm ViT needs "
        "--encoder_options=...,dynamic_img_size=true for them, and a size divisible by its patch size (or "
        "dynamic_img_pad=true).",
    )
    dino_local_crop_scale: list[float] = param.List(
        [0.05, 0.4],
        item_type=float,
        bounds=(2, 2),
        doc="DINO: area fraction min,max of the image that a local crop covers (the paper: 0.05,0.4).",
    )
    dino_global_crop_scale: list[float] = param.List(
        [],
        item_type=float,
        bounds=(0, 2),
        doc="DINO: area fraction min,max of the two global views, e.g. 0.4,1 (the paper's with local crops; it "
        "takes 0.14,1 without); empty (the default): the SSL augmentation config's random_crop.scale.",
    )
    vicreg_invariance_weight: float = param.Number(
        25.0, bounds=(0, None), doc="VICReg: weight of the invariance (mean squared error) term."
    )
    vicreg_variance_weight: float = param.Number(
        25.0, bounds=(0, None), doc="VICReg: weight of the variance (std of each dimension >= 1) term."
    )
    vicreg_covariance_weight: float = param.Number(
        1.0, bounds=(0, None), doc="VICReg: weight of the covariance (decorrelation) term."
    )
    barlow_twins_lambda: float = param.Number(
        5e-3, bounds=(0, None), doc="Barlow Twins: weight of the off-diagonal (redundancy reduction) terms."
    )
    mocov3_temperature: float = param.Number(
        1.0, bounds=(1e-4, None), doc="MoCo v3: contrastive loss temperature (1.0 for ResNets, as in MoCo v3)."
    )
    mocov3_base_momentum: float = param.Number(
        0.99, bounds=(0, 1), doc="MoCo v3: initial EMA momentum of the momentum encoder (cosine schedule to 1)."
    )

    # --- optimisation --------------------------------------------------------------------------------
    ssl_training_batch_size: int = param.Integer(256, bounds=(2, None), doc="SSL batch size per process.")
    linear_head_batch_size: int = param.Integer(256, bounds=(1, None), doc="Linear-head batch size per process.")
    learning_rate: float = param.Number(1e-3, bounds=(0, None), doc="Peak learning rate (after warmup).")
    learning_rate_linear_head_during_ssl_training: float = param.Number(
        DEFAULT_LEARNING_RATE,
        bounds=(0, None),
        doc="Learning rate of the online linear head's AdamW steps on standardised embeddings (between the converged "
        "fits of --linear_head_fit_at_validation, or alone without them).",
    )
    weight_decay: float = param.Number(
        1e-6, bounds=(0, None), doc="Weight decay of the optimizer (not applied to norm layers and biases)."
    )
    optimizer: str = param.Selector(
        objects=list(OPTIMIZER_NAMES),
        default="adamw",
        doc="Optimizer of SSL pretraining (classifiers train with AdamW), with the warmup-cosine schedule either "
        "way. adamw: AdamW. lars: LARS (SGD with momentum and layer-wise adaptive learning rates, for large "
        "batches; it needs a far larger learning_rate than AdamW, e.g. 0.3 x global batch / 256 as in SimCLR); "
        "norm layers and biases get neither weight decay nor layer-wise adaptation, and weight_decay must be "
        "> 0 for any adaptation.",
    )
    lars_momentum: float = param.Number(0.9, bounds=(0, 1), doc="LARS: SGD momentum (--optimizer=lars).")
    lars_trust_coefficient: float = param.Number(
        1e-3, bounds=(0, None), doc="LARS: trust coefficient of the layer-wise learning rates (--optimizer=lars)."
    )
    warmup_epochs: float = param.Number(10, bounds=(0, None), doc="Epochs of linear learning-rate warmup.")
    knn_k: int = param.Integer(
        20, bounds=(1, None), doc="kNN monitor: number of nearest labeled training embeddings that vote."
    )
    knn_temperature: float = param.Number(
        0.07, bounds=(1e-4, None), doc="kNN monitor: votes are weighted by exp(cosine similarity / temperature)."
    )
    knn_every_n_epochs: int = param.Integer(
        1,
        bounds=(0, None),
        doc="kNN monitor: run every N epochs (and at the last); 0 turns it off. Costs one pass over the labeled "
        "train and val sets.",
    )
    use_balanced_binary_loss_for_linear_head: bool = param.Boolean(
        False, doc="Weight the positive class by negatives/positives in binary linear-head losses."
    )
    linear_head_fit_at_validation: bool = param.Boolean(
        True,
        doc="At every validation, embed the linear head's labeled training split with the current encoder (preprocess "
        "only, no augmentation) and replace the online head by a logistic regression fitted to convergence on those "
        "embeddings (L-BFGS on standardised features, L2 strength chosen by validation AUROC, as the frozen "
        "linear-probe classifier): linear_head/val_* then read what a converged linear probe of the encoder reads. "
        "Costs one no-grad pass over the labeled training split per validation (as the kNN monitor) and the fit. "
        "False: the head learns from the streaming steps only, which can lag a converged probe by 0.05-0.1 AUROC.",
    )
    linear_head_steps_per_batch: int = param.Integer(
        DEFAULT_STEPS_PER_BATCH,
        bounds=(1, None),
        doc="Optimizer steps of the online linear head on each labeled batch: the batch is embedded once, so further "
        "steps cost next to nothing beside the encoder pass.",
    )
    linear_head_statistics_momentum: float = param.Number(
        DEFAULT_STATISTICS_MOMENTUM,
        bounds=(1e-4, 1),
        doc="Weight of each labeled batch in the running mean and variance that standardise the online head's "
        "embeddings (moving averages that follow the encoder's drift: 0.1 weighs about the last 10 batches); the "
        "converged fit at validation resets them to the labeled training split's.",
    )

    # --- augmentation --------------------------------------------------------------------------------
    ssl_augmentation_config: str = param.String(
        "augmentations/demo_ssl_augmentations.yaml", doc="YAML augmentations of the SSL views."
    )
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

    # --- data pipeline -------------------------------------------------------------------------------
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

    # --- validation ----------------------------------------------------------------------------------
    def validate(self, check_this_machine: bool = True) -> None:
        super().validate(check_this_machine)
        if check_this_machine and self.local_dataset is not None and not Path(self.local_dataset).is_dir():
            raise UserError(f"--local_dataset={self.local_dataset} is not a folder: pass the dataset's folder")
        for path in self.extra_local_dataset_paths if check_this_machine else []:
            if not Path(path).is_dir():
                raise UserError(f"--extra_local_dataset_paths entry {path} is not a folder: pass the dataset's folder")
        if self.ssl_training_type not in SSL_METHODS:
            ssl_method(self.ssl_training_type)
        ENCODERS.get(family_of(self.ssl_encoder))
        self.encoder_spec()
        weights = self.encoder_weights
        if check_this_machine and weights not in (NO_WEIGHTS, IMAGENET) and not Path(weights).is_file():
            raise UserError(f"--encoder_weights={weights} is not a file: pass none, imagenet or a state dict file")
        for name in (self.ssl_training_dataset_name, self.linear_head_dataset_name):
            if name is not None:
                DATASETS.get(name)

    # --- datasets ------------------------------------------------------------------------------------
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
        """Folder of the linear-head dataset and the flag that sets it."""
        if self.extra_local_dataset_paths:
            return Path(self.extra_local_dataset_paths[0]), "--extra_local_dataset_paths"
        if self.linear_head_dataset_name is not None and DATASETS.share_folder(
            self.linear_head_dataset_name, self.ssl_training_dataset_name
        ):
            return (Path(self.local_dataset) if self.local_dataset else None), "--local_dataset"
        return None, "--extra_local_dataset_paths"

    def build_dataset(
        self, name: str, root: Path | None, root_parameter: str, run_folder: Path | None
    ) -> DatasetSplits:
        bad_file_log = run_folder / BAD_FILE_LOG_NAME if run_folder is not None else None
        return DATASETS.get(name)(root, self.dataset_options(root_parameter, bad_file_log))

    def ssl_splits(self, run_folder: Path | None = None) -> DatasetSplits:
        root = Path(self.local_dataset) if self.local_dataset else None
        return self.build_dataset(self.ssl_training_dataset_name, root, "--local_dataset", run_folder)

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

    # --- creation ------------------------------------------------------------------------------------
    def create_datamodule(self, run_folder: Path | None = None) -> SSLDataModule:
        """Datasets, stored as configured (building decode caches where needed), and their augmentation streams."""
        ssl_config = self.augmentation("ssl_augmentation_config")
        ssl_splits = self.ssl_splits(run_folder)
        linear_head = self.linear_head_splits(run_folder)
        linear_head_config = self.augmentation("linear_head_augmentation_config") if linear_head else None
        used = [UsedDataset(self.ssl_training_dataset_name, "ssl", ssl_splits)]
        if linear_head is not None:
            used.append(UsedDataset(str(self.linear_head_dataset_name), "linear_head", linear_head))
        storage = self.image_storage([config for config in (ssl_config, linear_head_config) if config is not None])
        ssl_splits = storage.store_splits(ssl_splits, self.ssl_training_dataset_name, ("train", "val"))
        if linear_head is not None:
            linear_head = storage.store_splits(linear_head, str(self.linear_head_dataset_name), ("train", "val"))
        datamodule = SSLDataModule(
            ssl_splits=ssl_splits,
            # The method's own views (two for most methods; DINO's global and local crops), from its hyperparameters.
            ssl_stream=ImageStream(
                ssl_config,
                self.in_channels,
                self.augment_on_device,
                views=ssl_method(self.ssl_training_type).view_groups(self.method_hyperparameters()),
            ),
            ssl_batch_size=self.ssl_training_batch_size,
            linear_head_splits=linear_head,
            linear_head_train_stream=self.image_stream(linear_head_config) if linear_head_config else None,
            linear_head_eval_stream=(
                self.image_stream(linear_head_config.preprocess_only()) if linear_head_config else None
            ),
            linear_head_batch_size=self.linear_head_batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
        )
        datamodule.used_datasets = used
        return datamodule

    def encoder_spec(self) -> EncoderSpec:
        """The encoder this run trains: registry name, channels, options (2D images)."""
        return EncoderSpec(self.ssl_encoder, self.in_channels, 2, parse_encoder_options(self.encoder_options))

    def method_arguments(self) -> dict:
        arguments = {
            "encoder_name": self.ssl_encoder,
            "in_channels": self.in_channels,
            "encoder_options": self.encoder_spec().options,
            "learning_rate": effective_learning_rate(self, self.ssl_training_batch_size),
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
            "channels_last": self.channels_last,
            "optimizer_name": self.optimizer,
            "lars_momentum": self.lars_momentum,
            "lars_trust_coefficient": self.lars_trust_coefficient,
            "projection_dim": self.projection_dim,
            "projection_hidden_dim": self.projection_hidden_dim,
        }
        arguments.update(self.method_hyperparameters())
        return arguments

    def method_hyperparameters(self) -> dict:
        """The chosen method's own arguments (from which it also declares its views, ``view_groups``)."""
        method_specific = {
            "BYOL": {"base_momentum": self.byol_base_momentum},
            "SimCLR": {"temperature": self.simclr_temperature},
            "DINO": {
                "output_dim": self.dino_output_dim,
                "teacher_temperature": self.dino_teacher_temperature,
                "student_temperature": self.dino_student_temperature,
                "base_momentum": self.dino_base_momentum,
                "num_local_crops": self.dino_num_local_crops,
                "local_crop_size": self.dino_local_crop_size,
                "local_crop_scale": list(self.dino_local_crop_scale),
                "global_crop_scale": list(self.dino_global_crop_scale) or None,
            },
            "VICReg": {
                "invariance_weight": self.vicreg_invariance_weight,
                "variance_weight": self.vicreg_variance_weight,
                "covariance_weight": self.vicreg_covariance_weight,
            },
            "BarlowTwins": {"lambda_param": self.barlow_twins_lambda},
            "MoCoV3": {"temperature": self.mocov3_temperature, "base_momentum": self.mocov3_base_momentum},
        }
        return method_specific.get(self.ssl_training_type, {})

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> pl.LightningModule:
        module = ssl_method(self.ssl_training_type)(**self.method_arguments())
        if not self.resume:  # a resumed run's weights come from its checkpoint
            module.load_encoder_weights(self.encoder_weights)
        return module

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        splits = datamodule.linear_head_splits  # type: ignore[attr-defined]
        if splits is None:
            return []
        head = online_linear_head_for(
            datamodule,
            learning_rate=self.learning_rate_linear_head_during_ssl_training,
            steps_per_batch=self.linear_head_steps_per_batch,
            statistics_momentum=self.linear_head_statistics_momentum,
            fit_at_validation=self.linear_head_fit_at_validation,
            positive_weight=self.positive_weight(splits, self.use_balanced_binary_loss_for_linear_head),
            seed=self.random_seed,
        )
        callbacks: list[pl.Callback] = [head] if head is not None else []
        knn = knn_monitor_for(
            datamodule, k=self.knn_k, temperature=self.knn_temperature, every_n_epochs=self.knn_every_n_epochs
        )
        if knn is not None:
            callbacks.append(knn)
        return callbacks

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        if self.linear_head_dataset_name is None:
            return ("ssl/val_loss", "min")
        return (f"{METRIC_PREFIX}/val_auroc", "max")

    def uses_sync_batchnorm(self) -> bool:
        return True


def preprocess_size(config: AugmentationConfig) -> int | None:
    """The square size a config's preprocess works from: its resize, else its center crop, else None."""
    return config.preprocess.resize or config.preprocess.center_crop_size

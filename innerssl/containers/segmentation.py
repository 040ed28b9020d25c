"""SegmentationContainer: semantic segmentation of 2D images or 3D volumes from ``y/`` masks (or Decathlon labels),
from random init or from a restoration checkpoint (the whole U-Net, or its encoder; a masking ViT into UNETR's
``vit``), with few-label experiments (``--num_training_images``) and the pretrained-vs-random comparison."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import param
import pytorch_lightning as pl

from innerssl.cloud.parameters import AzureMLParameters
from innerssl.containers.base import Container
from innerssl.containers.groups.data import BAD_FILE_LOG_NAME
from innerssl.containers.groups.dense_network import DenseNetworkParameters
from innerssl.containers.groups.optimisation import OptimisationParameters
from innerssl.containers.groups.patch_data import PatchDataParameters
from innerssl.data.datasets.base import BadFileLog
from innerssl.data.patch_datamodule import PatchDataModule, load_split, parse_label_mapping
from innerssl.data.volume_preprocessing import VolumePreprocessing
from innerssl.errors import UserError
from innerssl.eval.dense_module import NETWORK_PREFIX, evaluation_device
from innerssl.eval.segmentation import PREFIX, SegmentationModule
from innerssl.networks.dense import DENSE_NETWORKS, DenseNetworkSpec, create_dense_network, encoder_keys, vit_options
from innerssl.networks.transfer import transfer_weights
from innerssl.outputs.checkpoints import CHECKPOINT_KEY, load_checkpoint

logger = logging.getLogger(__name__)

WEIGHTS_FLAG = "--local_weights_path"
MAE_NETWORK = "vit_mae"
MAE_TARGET = "unetr"
VIT_SOURCES = ("vit_mae", "vit_autoenc")
"""Pretraining networks whose ViT (patch_embedding, blocks, norm) goes into UNETR's ``vit``."""
VIT_OPTIONS = {"hidden_size": "hidden_size", "mlp_dim": "mlp_dim", "num_layers": "num_layers", "num_heads": "num_heads"}
"""vit_mae option -> UNETR option that builds the same ViT (token_size -> vit_patch_size)."""
PRETRAINED_INIT = "pretrained"
RANDOM_INIT = "random"


def restoration_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, state dict) of a restoration (or segmentation) checkpoint; one-line errors otherwise."""
    checkpoint = load_checkpoint(path, WEIGHTS_FLAG)
    info = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or "network_spec" not in info:
        kind = info.get("kind") if isinstance(info, dict) else None
        what = f"a {kind} checkpoint" if kind else "not an innerssl checkpoint"
        raise UserError(
            f"{path} is {what}, not a restoration run's: pass {WEIGHTS_FLAG}=<restoration run>/checkpoints/last.ckpt"
        )
    return info, checkpoint["state_dict"]


class SegmentationParameters(param.Parameterized):
    group_order: ClassVar[int] = 40
    group_title: ClassVar[str] = "Segmentation"
    parameter_aliases: ClassVar[dict[str, str]] = {
        "num_training_volumes": "num_training_images",
        "compare_num_training_volumes": "compare_num_training_images",
    }

    label_mapping: str = param.String(
        "",
        doc="Source label value -> class, e.g. 0:0,1:1,2:2 (every value in the masks must be listed); empty: a "
        "mask value > 0 is foreground (instance masks become nucleus / background).",
    )
    include_background: bool = param.Boolean(False, doc="Count the background class in the mean Dice.")
    num_training_images: int | None = param.Integer(
        None, allow_None=True, bounds=(1, None), doc="Train on only this many labeled images (few-label runs)."
    )
    foreground_fraction: float = param.Number(
        0.5, bounds=(0, 1), doc="Fraction of training patches centred on a foreground pixel (the rest anywhere)."
    )
    local_weights_path: str | None = param.String(
        None,
        allow_None=True,
        doc="A restoration run's checkpoint: its network is rebuilt with a new last layer and its weights loaded "
        "by name and shape (unmatched ones are listed in the log); a masking ViT goes into UNETR's vit.",
    )
    weights_part: str = param.Selector(
        objects=["whole", "encoder", "none"],
        default="whole",
        doc="What to load from --local_weights_path: the whole network (BiaPy's way), its encoder only, or none (the "
        "checkpoint's architecture from random init: the comparison's baseline, so that both arms train one network).",
    )
    strict_weights: bool = param.Boolean(
        False, doc="Make any checkpoint weight that does not fit the network (name or shape) an error."
    )
    freeze_encoder: bool = param.Boolean(False, doc="Keep the loaded encoder's weights fixed; train the rest.")
    compare_with_random_init: bool = param.Boolean(
        False,
        doc="Train from --local_weights_path and from random init for every --compare_num_training_images x "
        "--compare_repeats, and write comparison.csv / .md / .png (test Dice).",
    )
    compare_num_training_images: list[int] = param.List(
        [1, 3], item_type=int, doc="Training-set sizes of the comparison."
    )
    compare_repeats: int = param.Integer(3, bounds=(1, None), doc="Seeds per setting in the comparison.")


class SegmentationContainer(
    Container,
    PatchDataParameters,
    DenseNetworkParameters,
    SegmentationParameters,
    OptimisationParameters,
    AzureMLParameters,
):
    """Semantic segmentation with a dense network, optionally from a restoration-pretrained one."""

    def num_classes(self) -> int:
        mapping = parse_label_mapping(self.label_mapping) if self.label_mapping else {0: 0, 1: 1}
        return max(mapping.values()) + 1

    def validate_group(self, check_this_machine: bool) -> None:
        self.num_classes()
        self.preprocessing()
        if self.network:
            DENSE_NETWORKS.get(self.network)
        if self.network == MAE_NETWORK:
            raise UserError("--network=vit_mae is the masking task's network: segment with unetr (or a U-Net)")
        if self.freeze_encoder and (self.local_weights_path is None or self.weights_part == "none"):
            raise UserError(
                "--freeze_encoder keeps pretrained weights fixed: add --local_weights_path (and a --weights_part that "
                "loads them)"
            )
        if self.weights_part == "none" and self.local_weights_path is None:
            raise UserError("--weights_part=none builds --local_weights_path's network from random init: add it")
        if self.compare_with_random_init and self.weights_part == "none":
            raise UserError(
                "--compare_with_random_init compares loaded weights with random init: drop --weights_part=none"
            )
        if check_this_machine and self.local_weights_path and not Path(self.local_weights_path).is_file():
            raise UserError(f"{WEIGHTS_FLAG}={self.local_weights_path} is not a file: pass a restoration checkpoint")
        if self.compare_with_random_init and self.local_weights_path is None:
            raise UserError(
                "--compare_with_random_init needs --local_weights_path=<restoration run>/checkpoints/last.ckpt"
            )

    # --- data -------------------------------------------------------------------------------------------
    def create_datamodule(self, run_folder: Path | None = None) -> PatchDataModule:
        bad_file_log = BadFileLog(run_folder / BAD_FILE_LOG_NAME if run_folder is not None else None)
        layout = self.find_dataset_layout(bad_file_log)
        if not layout.has_targets("train"):
            raise UserError(
                f"{layout.root} has no masks for its training images (train/y/, labelsTr/ or datalist labels): "
                "segmentation needs them"
            )
        mapping = parse_label_mapping(self.label_mapping) if self.label_mapping else None
        preprocessing = self.preprocessing()
        if preprocessing.active:
            logger.info("Preprocessing once per image: %s", preprocessing.describe())
        splits = {
            split: load_split(layout, split, self.normaliser(), "labels", mapping, bad_file_log, preprocessing)
            for split in ("train", "val", "test")
        }
        for split in ("val", "test"):
            unlabeled = [image.name for image in splits[split] if image.target is None]
            if unlabeled:
                raise UserError(f"{split} images without masks ({', '.join(unlabeled[:3])}): add their y/ files")
        datamodule = PatchDataModule(
            splits["train"],
            splits["val"],
            splits["test"],
            patch_size=self.patch(),
            patches_per_image=self.patches_per_image,
            patches_per_epoch=self.patches_per_epoch,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
            flip=self.flip,
            foreground_fraction=self.foreground_fraction,
            num_training_images=self.num_training_images,
        )
        logger.info("%s", datamodule.describe())
        self._has_validation = bool(splits["val"])
        return datamodule

    def preprocessing(self) -> VolumePreprocessing:
        """MONAI's deterministic steps (--orientation ... --pad_to_patch), applied once per image at load."""
        return VolumePreprocessing.from_parameters(self, self.patch())

    # --- network and weights ----------------------------------------------------------------------------
    def network_spec(self, in_channels: int) -> tuple[DenseNetworkSpec, dict[str, Any] | None]:
        """The network to train, and the checkpoint's (metadata and state) where it starts from one."""
        if self.local_weights_path is None:
            name = self.network or "unet"
            spec = DenseNetworkSpec(
                name, self.spatial_dims, in_channels, self.num_classes(), self.patch(), self.network_option_values()
            )
            return spec, None
        info, state = restoration_checkpoint(self.local_weights_path)
        source = DenseNetworkSpec.from_dict(info["network_spec"])
        if source.in_channels != in_channels or source.spatial_dims != self.spatial_dims:
            raise UserError(
                f"{WEIGHTS_FLAG} holds a {source.spatial_dims}D network for {source.in_channels} channel(s) but this "
                f"data is {self.spatial_dims}D with {in_channels}: set --spatial_dims={source.spatial_dims} or use "
                "data like the pretraining's"
            )
        if source.name in VIT_SOURCES:
            name, options = MAE_TARGET, self.unetr_options(source)
            patch = tuple(source.patch_size)
            if tuple(self.patch()) != patch:
                raise UserError(
                    f"UNETR from a masking ViT needs the ViT's input size: --patch_size={','.join(map(str, patch))}"
                )
        else:
            name, options, patch = source.name, dict(source.options), self.patch()
        if self.network and self.network != name:
            raise UserError(
                f"--network={self.network} but {WEIGHTS_FLAG} holds a {source.name} (segmented with {name}): drop "
                "--network or pass a matching checkpoint"
            )
        spec = DenseNetworkSpec(name, self.spatial_dims, in_channels, self.num_classes(), patch, options)
        return spec, {"info": info, "state": state, "source": source}

    def unetr_options(self, source: DenseNetworkSpec) -> dict[str, Any]:
        """UNETR options that build the pretrained ViT (its token size, width, depth and heads)."""
        create_dense_network(source)  # the checkpoint's own network must build (a clear error otherwise)
        given = vit_options(source.options)
        options = {target: given[key] for key, target in VIT_OPTIONS.items() if key in given}
        token = source.options.get("token_size")
        if token is not None:
            options["vit_patch_size"] = token
        # The ViT is the checkpoint's; the config's U-Net options (channels, strides) do not apply to a UNETR.
        return options

    def load_pretrained(self, module: SegmentationModule, pretrained: dict[str, Any]) -> tuple[str, ...]:
        """The checkpoint's weights into the network; returns the loaded encoder keys (for --freeze_encoder)."""
        source: DenseNetworkSpec = pretrained["source"]
        into_unetr = source.name in VIT_SOURCES
        network = module.network
        encoder = set(encoder_keys(network))
        only = (lambda key: key in encoder) if (self.weights_part == "encoder" or into_unetr) else None
        report = transfer_weights(
            network,
            pretrained["state"],
            source_prefix=NETWORK_PREFIX,
            target_prefix="vit." if into_unetr else "",
            only_keys=(lambda key: key.startswith("vit.")) if into_unetr else only,
            strict=self.strict_weights,
        )
        report.log(logger, f"{WEIGHTS_FLAG}={self.local_weights_path}")
        return tuple(key for key in report.loaded if key in encoder or (into_unetr and key.startswith("vit.")))

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> SegmentationModule:
        assert isinstance(datamodule, PatchDataModule)
        spec, pretrained = self.network_spec(datamodule.in_channels)
        from innerssl.containers.restoration import output_suffix

        module = SegmentationModule(
            network_spec=spec.as_dict(),
            num_classes=self.num_classes(),
            include_background=self.include_background,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            test_overlap=self.test_overlap,
            test_padding=self.test_padding,
            tile_batch_size=self.tile_batch_size,
            output_suffix=output_suffix(datamodule.used_images["train"]),
        )
        if pretrained is not None and self.weights_part == "none":
            logger.info("--weights_part=none: the network of %s from random init", self.local_weights_path)
        elif pretrained is not None:
            loaded_encoder = self.load_pretrained(module, pretrained)
            if self.freeze_encoder:
                module.freeze(loaded_encoder)
                logger.info("--freeze_encoder: %d pretrained encoder tensors stay fixed", len(loaded_encoder))
        return module

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        # Without validation images (--val_fraction=0 on a tiny set) the test stage uses the last checkpoint.
        return (f"{PREFIX}/val_dice", "max") if getattr(self, "_has_validation", True) else None

    def has_test_stage(self) -> bool:
        return True

    def test_stage(
        self, module: pl.LightningModule, datamodule: pl.LightningDataModule, checkpoint: Path, output_root: Path
    ) -> dict[str, float]:
        from innerssl.eval.segmentation_test import run_segmentation_test

        assert isinstance(datamodule, PatchDataModule) and isinstance(module, SegmentationModule)
        test_images = self.trained_test_images(module, datamodule, checkpoint)
        if not test_images:
            return {}
        return run_segmentation_test(module, test_images, output_root, evaluation_device(self.max_num_gpus != 0))

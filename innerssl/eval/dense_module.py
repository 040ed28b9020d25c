"""The shared base of the modules that train a dense (image-to-image) network: restoration pretext tasks and
segmentation. Training is on random patches; validation and test are on whole images, cut into tiles of the
training patch with ``test_overlap`` / ``test_padding`` and blended back (:mod:`innerssl.data.tiling`).

Checkpoints record the network's spec (registry name, channels, spatial dims, patch, options) under
``CHECKPOINT_KEY``, so segmentation can rebuild a restoration network (with a new last layer) from a checkpoint
alone, and the state-dict prefix of the network (``network.``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from innerssl.data.tiling import TilingPlan, predict_by_tiles
from innerssl.networks.dense import DenseNetworkSpec, create_dense_network
from innerssl.optim import WarmupCosineModule
from innerssl.outputs.checkpoints import CHECKPOINT_FORMAT_VERSION, CHECKPOINT_KEY

NETWORK_PREFIX = "network."


class DenseNetworkModule(WarmupCosineModule):
    """A dense network from the registry, AdamW with warmup-cosine, and whole-image inference by tiles."""

    checkpoint_kind: ClassVar[str] = ""
    """``restoration`` or ``segmentation``, recorded in checkpoints."""

    def __init__(
        self,
        network_spec: dict[str, Any],
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 0,
        test_overlap: float = 0.25,
        test_padding: int = 0,
        tile_batch_size: int = 4,
    ) -> None:
        super().__init__()
        self.network: nn.Module = create_dense_network(DenseNetworkSpec.from_dict(network_spec))
        self.spec: DenseNetworkSpec = self.network.spec

    def tiling_plan(self, image_shape: tuple[int, ...]) -> TilingPlan:
        return TilingPlan(
            image_shape, tuple(self.spec.patch_size), self.hparams.test_overlap, self.hparams.test_padding
        )

    def tiles(self, image: Tensor, network: Any) -> Tensor:
        """``network``'s output for the whole ``(C, *spatial)`` image, tile by tile, blended."""
        plan = self.tiling_plan(tuple(image.shape[1:]))
        return predict_by_tiles(image, network, plan, self.hparams.tile_batch_size)

    def checkpoint_info(self) -> dict[str, Any]:
        """What made the checkpoint (kind, network spec, prefix); subclasses add theirs."""
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "kind": self.checkpoint_kind,
            "network_spec": self.spec.as_dict(),
            "network_prefix": NETWORK_PREFIX,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_info()

    def configure_optimizers(self) -> dict:
        return self.configure_warmup_cosine([self])


def load_module_weights(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """A finished run's weights (its best or last checkpoint) into ``module`` for the test stage."""
    module.load_state_dict(checkpoint["state_dict"])


def evaluation_device(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")

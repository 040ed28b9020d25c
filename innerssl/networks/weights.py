"""Starting weights of an encoder: ``none`` (random), ``imagenet`` (the library's own), or a file.

- ``imagenet``: torchvision's or timm's pretrained weights, downloaded by the library on first use (then cached
  in its own folder). Offline, a one-line error says how to pass a file instead.
- a file: a state dict saved by ``torch.save`` (also inside a ``state_dict`` / ``model`` key) or a
  ``.safetensors`` file, with the keys of the encoder (``network.conv1.weight``) or of the bare library model
  (``conv1.weight``, as torchvision and timm publish them). Classification layers are ignored; every weight of
  the encoder must be found, or the run stops naming what is missing.
- Another channel count than the weights': the first layer is adapted as timm does: summed over the RGB
  channels for one channel, repeated and rescaled by 3 / channels otherwise. A ViT's position embedding is
  resampled to its grid size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from innerssl.errors import UserError
from innerssl.networks.encoder import EncoderSpec, describe

logger = logging.getLogger(__name__)

NO_WEIGHTS = "none"
IMAGENET = "imagenet"
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "head_drop.", "heads.")


def adapt_input_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-layer weights ``(out, c, *k)`` for ``in_channels`` inputs (timm's ``adapt_input_conv`` rule)."""
    source_channels = weight.shape[1]
    if source_channels == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // source_channels)
    repeated = weight.repeat(1, repeats, *([1] * (weight.dim() - 2)))[:, :in_channels]
    return repeated * (source_channels / in_channels)


def read_state_dict(path: Path, parameter: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(
            f"{parameter}={path}: no such file; pass a state dict (.pt/.pth/.safetensors), none or imagenet"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the libraries raise many types for files that are not weights
        raise UserError(f"{parameter}={path} is not a readable state dict ({type(error).__name__}: {error})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{parameter}={path} holds no state dict of tensors")
    return state


def matching_prefix(encoder_keys: set[str], source_keys: set[str]) -> str:
    """The prefix that makes the source keys the encoder's (``""`` when they already are)."""
    candidates = {key.split(".", 1)[0] + "." for key in encoder_keys}
    best, best_overlap = "", len(encoder_keys & source_keys)
    for prefix in sorted(candidates):
        overlap = len(encoder_keys & {prefix + key for key in source_keys})
        if overlap > best_overlap:
            best, best_overlap = prefix, overlap
    return best


def resample_position_embedding(source: torch.Tensor, target: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    grid = int(round((target.shape[1] - prefix_tokens) ** 0.5))
    return resample_abs_pos_embed(source, new_size=[grid, grid], num_prefix_tokens=prefix_tokens)


def load_weights_into(encoder: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``encoder`` by the rules of this module; ``source`` names it in errors."""
    own = encoder.state_dict()
    prefix = matching_prefix(set(own), set(state))
    renamed = {prefix + key: value for key, value in state.items() if not key.startswith(CLASSIFIER_PREFIXES)}
    input_weight = f"{getattr(encoder, 'input_layer_name', '')}.weight"
    if input_weight in renamed and input_weight in own:
        renamed[input_weight] = adapt_input_weight(renamed[input_weight], own[input_weight].shape[1])
    for key, value in list(renamed.items()):
        if key.endswith("pos_embed") and key in own and value.shape != own[key].shape:
            renamed[key] = resample_position_embedding(value, own[key], int(getattr(encoder, "num_prefix_tokens", 0)))
    missing = sorted(set(own) - set(renamed))
    wrong = sorted(key for key in set(own) & set(renamed) if renamed[key].shape != own[key].shape)
    if missing or wrong:
        detail = (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else f"{len(wrong)} of another shape ({wrong[0]})"
        )
        raise UserError(f"{source} does not fit this encoder: {detail}; check --ssl_encoder and --encoder_options")
    encoder.load_state_dict({key: renamed[key] for key in own})


def imagenet_state_dict(spec: EncoderSpec, parameter: str = "--encoder_weights") -> dict[str, torch.Tensor]:
    """The library's ImageNet weights for ``spec``'s network (downloaded and cached by torchvision / timm); errors
    name ``parameter``, the flag that asked for them."""
    try:
        if spec.name.startswith("timm:"):
            from innerssl.networks.timm_encoders import timm_model

            rgb = EncoderSpec(spec.name, 3, spec.spatial_dims, spec.options)
            return timm_model(rgb, pretrained=True).state_dict()
        from innerssl.networks.torchvision_encoders import TORCHVISION_NETWORKS, torchvision_network

        if spec.name not in TORCHVISION_NETWORKS:
            raise UserError(
                f"{parameter}=imagenet: {spec.name} has no ImageNet weights here (torchvision and timm:<model> "
                "encoders do); pass a weights file instead"
            )
        return torchvision_network(spec.name, pretrained=True).state_dict()
    except UserError:
        raise
    except Exception as error:  # no network, a proxy, a hub error: the download failed
        raise UserError(
            f"{parameter}=imagenet could not download the ImageNet weights of {spec.name} "
            f"({type(error).__name__}: {str(error)[:150]}); on an offline machine download them where there is a "
            f"network and pass the file with {parameter}=<file>"
        ) from None


def load_starting_weights(encoder: nn.Module, weights: str, parameter: str = "--encoder_weights") -> None:
    """Apply ``weights`` (``none``, ``imagenet`` or a file path) to ``encoder`` in place."""
    if weights in ("", NO_WEIGHTS):
        return
    spec = describe(encoder)
    if weights == IMAGENET:
        state, source = imagenet_state_dict(spec, parameter), f"the ImageNet weights of {spec.name}"
    else:
        state, source = read_state_dict(Path(weights), parameter), f"{parameter}={weights}"
    load_weights_into(encoder, state, source)
    logger.info("Encoder %s starts from %s", spec.name, source)

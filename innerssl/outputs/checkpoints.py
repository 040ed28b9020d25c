"""Checkpoint metadata and safe loading of checkpoints users share.

Checkpoints are loaded with ``torch.load(weights_only=True)``: tensors, containers and plain values
only, so a shared checkpoint cannot run arbitrary pickled code. innerssl writes nothing else, and
records under ``CHECKPOINT_KEY`` what made the checkpoint (kind, SSL method, encoder, input channels, and the
full :class:`~innerssl.networks.EncoderSpec` with construction options, from which the classifier, the kNN
evaluation, the comparison and export rebuild the encoder).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from innerssl.errors import UserError

if TYPE_CHECKING:
    from innerssl.networks import EncoderSpec

CHECKPOINT_KEY = "innerssl"
CHECKPOINT_FORMAT_VERSION = 1
CheckpointKind = Literal["ssl", "classifier"]


def checkpoint_metadata(
    kind: CheckpointKind,
    encoder_name: str,
    in_channels: int,
    method: str = "",
    encoder_prefix: str = "",
    encoder_spec: dict[str, Any] | None = None,
) -> dict:
    """What made a checkpoint; ``encoder_prefix`` selects the downstream encoder's state_dict keys (SSL only);
    ``encoder_spec`` (innerssl.networks.EncoderSpec as a dict) rebuilds the encoder with its options."""
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": kind,
        "method": method,
        "encoder_name": encoder_name,
        "in_channels": in_channels,
        "encoder_prefix": encoder_prefix,
        "encoder_spec": encoder_spec or {"name": encoder_name, "in_channels": in_channels, "spatial_dims": 2},
    }


def encoder_spec_of(info: dict[str, Any]) -> EncoderSpec:
    """The encoder a checkpoint's metadata describes (older checkpoints: name and channels only)."""
    from innerssl.networks import EncoderSpec

    spec = info.get("encoder_spec") or {"name": info["encoder_name"], "in_channels": info["in_channels"]}
    return EncoderSpec.from_dict(spec)


def load_checkpoint(path: Path | str, parameter: str = "--local_weights_path") -> dict[str, Any]:
    """Read a checkpoint without executing pickled code; clear one-line errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} does not exist: check {parameter}")
    try:
        # mmap: tensors are read when used, so checking a checkpoint's metadata early costs little.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown object"
        raise UserError(
            f"Checkpoint {path} contains objects innerssl never stores ({first_line[:200]}); refusing to "
            f"unpickle it. Pass a checkpoint written by innerssl with {parameter}"
        ) from None
    except Exception as error:  # torch raises many types for files that are not checkpoints
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]}): "
            f"check {parameter}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not a Lightning checkpoint (no state_dict): check {parameter}")
    return checkpoint


def ssl_checkpoint_info(checkpoint: dict[str, Any], path: Path | str, parameter: str) -> dict[str, Any]:
    info = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(info, dict):
        raise UserError(f"{path} was not written by innerssl (no '{CHECKPOINT_KEY}' metadata): check {parameter}")
    if info.get("kind") != "ssl":
        raise UserError(
            f"{path} is a {info.get('kind')} checkpoint, not an SSL checkpoint: pass the last.ckpt or best.ckpt "
            f"of an SSL run with {parameter}"
        )
    if not info.get("encoder_prefix"):
        raise UserError(f"{path} does not say which weights are its encoder: check {parameter}")
    return info


def format_encoder_options(options: Mapping[str, Any]) -> str:
    """Options as the ``--encoder_options`` text that sets them: ``img_size=32,patch_size=8`` (tuples as 96x96x96)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if value is None:
            return "none"
        if isinstance(value, list | tuple):
            return "x".join(str(item) for item in value)
        return str(value)

    return ",".join(f"{key}={text(value)}" for key, value in options.items())


def describe_encoder(spec: EncoderSpec) -> str:
    """One phrase naming an encoder spec, for errors, logs and model.json: name, options, channels, dims."""
    options = f" ({format_encoder_options(spec.options)})" if spec.options else ""
    return f"{spec.name}{options} with {spec.in_channels} input channel(s), {spec.spatial_dims}D"


def _comparable(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options with lists as tuples: a tuple option may come back from a checkpoint or YAML as a list."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}


def check_encoder_spec(recorded: EncoderSpec, requested: EncoderSpec, path: Path | str) -> None:
    """A one-line error naming the flags to set when ``requested`` (the run's flags) is not the checkpoint's encoder.

    Compared: name, input channels and construction options (a ViT's img_size / patch_size change its weights'
    shapes and meaning); the spatial dims are the checkpoint's."""
    same = (recorded.name, recorded.in_channels, _comparable(recorded.options)) == (
        requested.name,
        requested.in_channels,
        _comparable(requested.options),
    )
    if not same:
        raise UserError(
            f"{path} holds a {describe_encoder(recorded)} encoder, but this run asks for "
            f"{describe_encoder(requested)}: "
            f"set --ssl_encoder={recorded.name} --in_channels={recorded.in_channels} "
            f"--encoder_options={format_encoder_options(recorded.options)}"
        )


def ssl_checkpoint_encoder(
    path: Path | str, parameter: str = "--local_weights_path"
) -> tuple[EncoderSpec, dict[str, torch.Tensor]]:
    """The downstream encoder of an SSL checkpoint (BYOL: target encoder; SimCLR: encoder): its spec and weights."""
    checkpoint = load_checkpoint(path, parameter)
    info = ssl_checkpoint_info(checkpoint, path, parameter)
    prefix = info["encoder_prefix"]
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise UserError(f"{path} has no '{prefix}*' weights: it is damaged or not an innerssl SSL checkpoint")
    return encoder_spec_of(info), state


def encoder_state_from_ssl_checkpoint(
    path: Path | str,
    encoder_name: str,
    in_channels: int,
    parameter: str = "--local_weights_path",
    encoder_options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The downstream encoder's weights, after checking that the checkpoint holds ``encoder_name`` with
    ``in_channels`` (and ``encoder_options``; None: options are not compared, for callers that know none)."""
    from innerssl.networks import EncoderSpec

    recorded, state = ssl_checkpoint_encoder(path, parameter)
    options = recorded.options if encoder_options is None else dict(encoder_options)
    check_encoder_spec(recorded, EncoderSpec(encoder_name, in_channels, recorded.spatial_dims, options), path)
    return state


def classifier_checkpoint_encoder_spec(path: Path | str, parameter: str = "--test_only_checkpoint") -> EncoderSpec:
    """The encoder a classifier checkpoint holds (older ones without a spec: name and channels)."""
    info = load_checkpoint(path, parameter).get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or info.get("kind") != "classifier":
        raise UserError(
            f"{path} is not an innerssl classifier checkpoint: pass a classifier run's best.ckpt with {parameter}"
        )
    return encoder_spec_of(info)

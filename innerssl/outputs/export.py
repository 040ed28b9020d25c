"""Export a trained encoder or classifier for deployment: TorchScript and ONNX, with ``model.json``.

From an SSL checkpoint the export is the downstream encoder (BYOL: the target encoder; SimCLR: the
encoder), mapping images to embeddings; from a classifier checkpoint it is encoder + head followed by
the task's activation, mapping images to class probabilities. The encoder is rebuilt from the checkpoint's
encoder spec (registry name, channels, construction options such as a timm ViT's ``img_size`` and
``patch_size``; checkpoints from before the spec: name and channels), which ``model.json`` records as
``encoder_spec`` beside a one-line ``encoder_description``. Both take a float32 batch
``(batch, channels, image_size, image_size)`` in [0, 1] (the batch size is free) and run in eval mode
(BatchNorm with its running statistics, no dropout).

``<run folder>/deployment_model/`` (or ``output_folder``) receives ``model.pt`` (TorchScript, by
``torch.jit.trace``), ``model.onnx`` (ONNX, by ``torch.onnx.export``'s ``torch.export``-based exporter,
opset ``ONNX_OPSET``, weights inside the file) and ``model.json``, which says what goes in and what
comes out: input shape, channels and value range, the preprocessing of the run's augmentation config,
class names, task, output meaning, the encoder (name, spec with options), source checkpoint, innerssl and torch
versions, opset.

Every export is checked before ``model.json`` is written: the exported files are loaded back
(``torch.jit.load``; ONNX Runtime for ONNX) and run on a seeded batch of ``PARITY_BATCH_SIZE`` random
images, a different batch size from the one traced, so a batch size baked into the graph would show;
their outputs must match the PyTorch model's within ``|exported - pytorch| <= PARITY_ATOL +
PARITY_RTOL * |pytorch|`` (1e-4 each: float32 kernels differ in summation order, not more). A mismatch
raises :class:`ExportParityError` and removes the exported files. Mistakes (unknown format, missing or
wrong checkpoint, unwritable folder, missing ONNX packages) raise a one-line :class:`UserError`.

ONNX needs the optional extra: ``pip install -e ".[export]"`` (onnx, onnxscript, which torch's exporter
uses, and onnxruntime for the check). ``torch.jit`` is deprecated in recent PyTorch, but TorchScript
files remain what libtorch (C++) loads; its deprecation warnings are silenced here.

Command line::

    python -m innerssl.outputs.export --checkpoint=outputs/DemoClassifier/<run>/checkpoints/best.ckpt \\
        --formats=torchscript,onnx [--image_size=224] [--output_folder=DIR]

``--image_size`` defaults to the run's center-crop size (``config.yaml`` beside ``checkpoints/``), or for
the embedded demo dataset to ``demo_image_size``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import inspect
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

import innerssl
from innerssl.augment.config import load_augmentation_config
from innerssl.augment.per_sample import LUMINANCE_WEIGHTS
from innerssl.errors import UserError
from innerssl.networks import EncoderSpec, create_encoder
from innerssl.outputs.checkpoints import (
    CHECKPOINT_KEY,
    describe_encoder,
    encoder_spec_of,
    load_checkpoint,
    ssl_checkpoint_encoder,
)

logger = logging.getLogger("innerssl.outputs.export")  # also when run as __main__

EXPORT_FORMATS = ("torchscript", "onnx")
DEPLOYMENT_FOLDER = "deployment_model"
MODEL_FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
METADATA_FILE = "model.json"
ONNX_OPSET = 18
INPUT_NAME = "images"
TRACE_BATCH_SIZE = 2
PARITY_BATCH_SIZE = 3
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
PARITY_SEED = 0
MIN_IMAGE_SIZE = 8
DEMO_DATASET = "Demo"
CHECKPOINT_FLAG = "--checkpoint"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")

NORMALISATION = (
    "float32 in [0, 1], no mean/std normalisation: integer pixels divided by their type's full range (8-bit by "
    "255, 16-bit by 65535); DICOM after rescale slope/intercept, the VOI LUT or window (MONOCHROME1 inverted), "
    "scaled by the range its header allows (see innerssl/data/image_io.py)"
)


class ExportParityError(RuntimeError):
    """An exported model's outputs differ from the PyTorch model's by more than the tolerance."""


# --- what is exported ----------------------------------------------------------------------------------
class ProbabilityClassifier(nn.Module):
    """Encoder + head + the task's activation: softmax (multiclass) or sigmoid (binary, multilabel)."""

    def __init__(self, encoder: nn.Module, head: nn.Module, task: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.softmax = task == "multiclass"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(images).float())
        return logits.softmax(dim=1) if self.softmax else logits.sigmoid()


@dataclass
class ExportSource:
    """A model read from a checkpoint, in eval mode on the CPU, and what it means."""

    checkpoint: Path
    kind: str
    model: nn.Module
    encoder_spec: EncoderSpec
    output_name: str
    output_size: int
    output_meaning: str
    task: str | None = None
    class_names: list[str] = field(default_factory=list)
    ssl_method: str | None = None

    @property
    def encoder_name(self) -> str:
        return self.encoder_spec.name

    @property
    def in_channels(self) -> int:
        return self.encoder_spec.in_channels


def _checkpoint_info(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    info = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or info.get("kind") not in ("ssl", "classifier"):
        raise UserError(
            f"{path} was not written by innerssl (no '{CHECKPOINT_KEY}' metadata): pass an SSL or classifier "
            f"run's checkpoints/last.ckpt or best.ckpt with {CHECKPOINT_FLAG}"
        )
    return info


def _ssl_source(path: Path, info: dict[str, Any]) -> ExportSource:
    spec, state = ssl_checkpoint_encoder(path, CHECKPOINT_FLAG)
    encoder = create_encoder(spec)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{path} holds encoder weights that do not fit {describe_encoder(spec)}: {first_line[:200]}"
        ) from None
    method = info.get("method")
    return ExportSource(
        checkpoint=path,
        kind="encoder",
        model=encoder,
        encoder_spec=spec,
        output_name="embeddings",
        output_size=int(encoder.feature_dim),
        output_meaning=(
            f"embeddings: the pooled features (not normalised) of the {describe_encoder(spec)} encoder (its forward: "
            "global average pooling of a CNN's feature map, a ViT's class token or token pooling), the "
            f"{method} run's downstream encoder{' (target network)' if method == 'BYOL' else ''}"
        ),
        ssl_method=method,
    )


def _classifier_source(path: Path, checkpoint: dict[str, Any], info: dict[str, Any]) -> ExportSource:
    from innerssl.eval.classifier import SSLClassifier  # the classifier module pulls in the training stack

    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, dict):
        raise UserError(f"{path} has no hyper_parameters: it is damaged or not an innerssl classifier checkpoint")
    accepted = inspect.signature(SSLClassifier.__init__).parameters
    arguments = {k: v for k, v in hyper_parameters.items() if k in accepted}
    if arguments.get("encoder_spec") is None and info.get("encoder_spec"):
        arguments["encoder_spec"] = encoder_spec_of(info).as_dict()
    try:
        module = SSLClassifier(**arguments)
        module.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a loadable innerssl classifier checkpoint ({first_line[:200]})") from None
    label_info = module.label_info
    task = label_info.task
    class_names = list(label_info.class_names)
    if task == "binary":
        positive = class_names[1] if len(class_names) > 1 else "positive"
        meaning = f"probabilities: (batch, 1), the probability of '{positive}' (sigmoid)"
    elif task == "multiclass":
        meaning = "probabilities: (batch, classes) in class_names order, summing to 1 (softmax)"
    else:
        meaning = "probabilities: (batch, labels) in class_names order, each label independently (sigmoid)"
    return ExportSource(
        checkpoint=path,
        kind="classifier",
        model=ProbabilityClassifier(module.encoder, module.head, task),
        encoder_spec=module.encoder_spec,
        output_name="probabilities",
        output_size=label_info.num_outputs,
        output_meaning=meaning,
        task=task,
        class_names=class_names,
    )


def load_export_source(checkpoint_path: Path | str) -> ExportSource:
    """The encoder (SSL checkpoint) or probability classifier (classifier checkpoint) in a checkpoint."""
    path = Path(checkpoint_path)
    checkpoint = load_checkpoint(path, CHECKPOINT_FLAG)
    info = _checkpoint_info(checkpoint, path)
    if info["kind"] == "ssl":
        source = _ssl_source(path, info)
    else:
        source = _classifier_source(path, checkpoint, info)
    source.model = source.model.float().cpu().eval().requires_grad_(False)
    return source


# --- the run's preprocessing ---------------------------------------------------------------------------
def run_config(checkpoint: Path) -> dict[str, Any] | None:
    """The run's config.yaml (``<run>/config.yaml`` for ``<run>/checkpoints/x.ckpt``), if it can be read."""
    folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def preprocessing(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the run did to images before the encoder at evaluation (its augmentation config's preprocess).

    The linear head's / classifier's eval transform where the run had a labeled dataset, else the SSL one.
    None when the config cannot be found.
    """
    if config is None:
        return None
    parameter = (
        "linear_head_augmentation_config"
        if config.get("linear_head_dataset_name") and config.get("linear_head_augmentation_config")
        else "ssl_augmentation_config"
    )
    image_size = config.get("image_size")
    if image_size:
        resize, crop, source = image_size, image_size, f"--image_size={image_size} of the run"
    else:
        if not config.get(parameter):
            return None
        try:
            preprocess = load_augmentation_config(config[parameter]).preprocess
        except UserError:
            return None
        resize, crop, source = preprocess.resize, preprocess.center_crop_size, f"{parameter}={config[parameter]}"
    steps = []
    if resize:
        steps.append(f"resize the shorter side to {resize} px (bilinear, antialiased, aspect ratio kept)")
    if crop:
        steps.append(f"center-crop {crop} x {crop} px")
    return {
        "resize": resize,
        "center_crop_size": crop,
        "source": source,
        "description": "; ".join(steps) if steps else "none: images are used at the size they have",
    }


def channel_description(in_channels: int) -> str:
    if in_channels == 1:
        weights = ", ".join(str(w) for w in LUMINANCE_WEIGHTS)
        return f"1 channel: grayscale; RGB images are converted to luminance with weights ({weights})"
    if in_channels == 3:
        return "3 channels: RGB; grayscale images are repeated into the 3 channels"
    return f"{in_channels} channels, in the order of the training images' channels; one-channel images are repeated"


def default_image_size(checkpoint: Path | str) -> int:
    """The run's input size, for a command line without ``--image_size``: its center-crop size, or for the
    embedded demo dataset (no preprocess) the size the demo images were generated at."""
    if not Path(checkpoint).is_file():
        raise UserError(f"Checkpoint {checkpoint} does not exist: check {CHECKPOINT_FLAG}")
    config = run_config(Path(checkpoint))
    steps = preprocessing(config)
    if steps is not None and steps["center_crop_size"]:
        return int(steps["center_crop_size"])
    dataset = (config or {}).get("linear_head_dataset_name") or (config or {}).get("ssl_training_dataset_name")
    if steps is not None and not steps["resize"] and dataset == DEMO_DATASET and (config or {}).get("demo_image_size"):
        return int(config["demo_image_size"])  # type: ignore[index]
    raise UserError(
        f"Cannot tell the input size of {checkpoint} (no config.yaml beside its checkpoints/ folder, or its "
        "preprocess does not crop to a fixed size): pass --image_size"
    )


# --- writing and checking ------------------------------------------------------------------------------
def parse_formats(formats: Sequence[str] | str) -> list[str]:
    """The distinct formats asked for, in order; UserError for an unknown one or none (for early validation)."""
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen: list[str] = []
    for name in (f.strip().lower() for f in formats):
        if not name:
            continue
        if name not in EXPORT_FORMATS:
            raise UserError(f"Unknown export format '{name}': choose from {', '.join(EXPORT_FORMATS)} with --formats")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise UserError(f"No export format given: pass --formats={','.join(EXPORT_FORMATS)} or one of them")
    return chosen


def _check_onnx_packages() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"ONNX export needs {', '.join(missing)}: install innerssl's export extra (pip install -e '.[export]') "
            "or choose --formats=torchscript"
        )


def _prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"Cannot write the exported model to {folder} ({error.strerror or error}): choose another --output_folder"
        ) from None


def _remove_outputs(folder: Path) -> None:
    for name in (*MODEL_FILES.values(), f"{MODEL_FILES['onnx']}.data", METADATA_FILE):
        (folder / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_torch_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet_torch_jit(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, output_name: str) -> None:
    """ONNX by torch.export, with a free batch dimension and the weights inside the one file."""
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[output_name],
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )


def run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    with _quiet_torch_jit(), torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(images)


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {INPUT_NAME: images.numpy()})
    return torch.from_numpy(output)


def max_difference(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, bool]:
    """Largest absolute difference, and whether every element is within the parity tolerance."""
    if actual.shape != expected.shape:
        return float("inf"), False
    difference = (actual.float() - expected.float()).abs()
    within = bool((difference <= PARITY_ATOL + PARITY_RTOL * expected.float().abs()).all())
    return float(difference.max()) if difference.numel() else 0.0, within


def parity_images(in_channels: int, image_size: int, batch_size: int = PARITY_BATCH_SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(PARITY_SEED)
    return torch.rand(batch_size, in_channels, image_size, image_size, generator=generator)


RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx}


def model_metadata(
    source: ExportSource, formats: Sequence[str], image_size: int, differences: dict[str, float]
) -> dict[str, Any]:
    steps = preprocessing(run_config(source.checkpoint))
    if steps is not None and steps["center_crop_size"] and steps["center_crop_size"] != image_size:
        logger.warning(
            "Exporting for %d px input, but the run's preprocess crops to %d px", image_size, steps["center_crop_size"]
        )
    return {
        "kind": source.kind,
        "task": source.task,
        "class_names": source.class_names,
        "files": {name: MODEL_FILES[name] for name in formats},
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", source.in_channels, image_size, image_size],
            "dtype": "float32",
            "layout": "NCHW",
            "channels": source.in_channels,
            "channel_meaning": channel_description(source.in_channels),
            "image_size": image_size,
            "value_range": [0.0, 1.0],
            "normalisation": NORMALISATION,
            "preprocessing": steps,
        },
        "output": {
            "name": source.output_name,
            "shape": ["batch", source.output_size],
            "dtype": "float32",
            "meaning": source.output_meaning,
        },
        "encoder": source.encoder_name,
        "encoder_spec": source.encoder_spec.as_dict(),
        "encoder_description": describe_encoder(source.encoder_spec),
        "ssl_method": source.ssl_method,
        "source_checkpoint": str(source.checkpoint.resolve()),
        "innerssl_version": innerssl.__version__,
        "torch_version": torch.__version__,
        "onnx_opset": ONNX_OPSET if "onnx" in formats else None,
        "parity_check": {
            "batch_size": PARITY_BATCH_SIZE,
            "inputs": f"uniform random [0, 1] images, seed {PARITY_SEED}",
            "atol": PARITY_ATOL,
            "rtol": PARITY_RTOL,
            "max_abs_difference": differences,
        },
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def default_output_folder(checkpoint: Path) -> Path:
    """``<run folder>/deployment_model`` for ``<run folder>/checkpoints/<name>.ckpt``, else beside the file."""
    run_folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run_folder / DEPLOYMENT_FOLDER


def export_run(checkpoint: Path, formats: Sequence[str], image_size: int, output_folder: Path | None = None) -> Path:
    """Export the checkpoint's model in ``formats`` into ``output_folder``, checked; returns the folder.

    ``checkpoint``: an innerssl SSL checkpoint (exports the encoder) or classifier checkpoint (exports
    the classifier with probabilities). ``output_folder`` defaults to ``<run folder>/deployment_model``.
    """
    chosen = parse_formats(formats)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if "onnx" in chosen:
        _check_onnx_packages()
    checkpoint = Path(checkpoint)
    source = load_export_source(checkpoint)
    folder = Path(output_folder) if output_folder is not None else default_output_folder(checkpoint)
    _prepare_folder(folder)
    _remove_outputs(folder)
    model = source.model
    example = parity_images(source.in_channels, image_size, TRACE_BATCH_SIZE)
    images = parity_images(source.in_channels, image_size)
    with torch.no_grad():
        expected = model(images)
    differences: dict[str, float] = {}
    try:
        for name in chosen:
            path = folder / MODEL_FILES[name]
            if name == "torchscript":
                export_torchscript(model, example, path)
            else:
                export_onnx(model, example, path, source.output_name)
            difference, within = max_difference(RUNNERS[name](path, images), expected)
            if not within:
                raise ExportParityError(
                    f"The {name} export of {checkpoint} differs from the PyTorch model by up to {difference:.3g} "
                    f"(tolerance {PARITY_ATOL:g} + {PARITY_RTOL:g} x |output|); nothing was exported"
                )
            differences[name] = difference
            logger.info("Exported %s: %s (max difference to PyTorch %.2g)", name, path, difference)
        metadata = model_metadata(source, chosen, image_size, differences)
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        _remove_outputs(folder)
        raise
    return folder


# --- command line --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m innerssl.outputs.export",
        description="Export an innerssl SSL encoder or classifier to TorchScript and ONNX, checked against PyTorch.",
    )
    parser.add_argument("--checkpoint", required=True, help="last.ckpt or best.ckpt of an SSL or classifier run")
    parser.add_argument(
        "--formats", default=",".join(EXPORT_FORMATS), help="comma-separated: torchscript, onnx (default: both)"
    )
    parser.add_argument("--image_size", type=int, default=None, help="input size in pixels (default: the run's crop)")
    parser.add_argument("--output_folder", default=None, help="default: <run folder>/deployment_model")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # quiet onnxscript's optimiser
    logging.getLogger("innerssl").setLevel(logging.INFO)
    try:
        image_size = arguments.image_size or default_image_size(arguments.checkpoint)
        folder = export_run(
            Path(arguments.checkpoint),
            arguments.formats.split(","),
            image_size,
            Path(arguments.output_folder) if arguments.output_folder else None,
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Exported to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a container's model with Lightning: run folder, seeding, trainer, checkpoints, resume, report."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from innerssl.compile import compile_networks
from innerssl.containers.base import Container
from innerssl.containers.groups.data import BAD_FILE_LOG_NAME
from innerssl.data.datasets.base import read_bad_file_log
from innerssl.distributed import (
    RUN_NAME_ENV,
    gpus_per_node,
    is_global_zero,
    parameters_without_gradients,
    shared_run_name,
    world_size,
)
from innerssl.outputs.augmentation_previews import (
    AUGMENTATION_FOLDER,
    AugmentationPreviews,
    previews_of,
    write_previews,
)
from innerssl.outputs.data_report import decode_every_image, log_data_report
from innerssl.outputs.durable_io import DurableCheckpointIO
from innerssl.outputs.last_checkpoint import LastCheckpoint
from innerssl.outputs.metrics_csv import EpochMetricsWriter
from innerssl.outputs.run_folder import BEST_CHECKPOINT_STEM, RunFolder, resolve_run_folder
from innerssl.outputs.splits_csv import SPLITS_CSV, write_image_splits_csv, write_splits_csv

logger = logging.getLogger(__name__)

LOG_EVERY_N_STEPS = 10


@dataclass(frozen=True)
class RunResult:
    folder: RunFolder
    best_metric: str | None
    best_value: float | None
    bad_files: int
    test_metrics: dict[str, float] = field(default_factory=dict)
    """``classifier/test_*`` metrics of the test stage (empty when the run has no test stage or test split)."""
    num_train_images: int | None = None
    """Images in the (label-fraction subset of the) labeled training split, where the run has one."""
    checked_data_only: bool = False
    """--check_data: the datasets were built and reported, nothing was trained."""


def hardware(container: Container, module: nn.Module | None = None) -> dict:
    """Trainer arguments for accelerator, devices, nodes and strategy.

    DDP searches for parameters without gradients (``ddp_find_unused_parameters_true``) only where ``module``
    has some (:func:`~innerssl.distributed.parameters_without_gradients`: MONAI's ViT blocks).

    More than one process in all (GPUs per node x nodes, or ``num_cpu_processes`` x nodes on the CPU), or
    ``force_ddp``, trains with Lightning's DDP (NCCL on GPUs, gloo on the CPU); SSL (and finetuning) then
    synchronises BatchNorm statistics across processes, which PyTorch supports on GPUs only.
    """
    gpus = gpus_per_node(container)
    devices = gpus or container.num_cpu_processes
    distributed = devices * container.num_nodes > 1 or container.force_ddp
    arguments = {
        "accelerator": "gpu" if gpus else "cpu",
        "devices": devices,
        "num_nodes": container.num_nodes,
        "strategy": "ddp" if distributed else "auto",
    }
    if distributed and module is not None:
        unused = parameters_without_gradients(module)
        if unused:
            logger.info("DDP finds unused parameters: %d never get gradients (e.g. %s)", len(unused), unused[0])
            arguments["strategy"] = "ddp_find_unused_parameters_true"
    if gpus:
        arguments["sync_batchnorm"] = distributed and container.uses_sync_batchnorm()
    return arguments


def progress_bar_refresh_rate(container: Container) -> int:
    """Steps between progress-bar updates: every update reads the logged loss back from the device, which
    waits for the GPU to finish its queued work, so on GPUs only every ``LOG_EVERY_N_STEPS`` steps."""
    return LOG_EVERY_N_STEPS if gpus_per_node(container) else 1


def add_file_logging(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def open_run_folder(container: Container, model_name: str, folder: RunFolder) -> logging.Handler:
    """Global rank 0's start of a run: the folder, its log.txt (the returned handler, for the caller to remove)
    and config.yaml."""
    folder.root.mkdir(parents=True, exist_ok=True)
    handler = add_file_logging(folder.log_file)
    try:
        config = {"model": model_name, **container.config_dict()}
        folder.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    except BaseException:
        logging.getLogger().removeHandler(handler)
        handler.close()
        raise
    return handler


def best_checkpoint_callback(container: Container, folder: RunFolder) -> ModelCheckpoint | None:
    """best.ckpt by the container's monitored metric (None where the container monitors none)."""
    monitor = container.checkpoint_monitor()
    if monitor is None:
        return None
    metric, mode = monitor
    return ModelCheckpoint(
        dirpath=folder.checkpoints,
        filename=BEST_CHECKPOINT_STEM,
        monitor=metric,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )


# innerssl's training loaders are resumable through their sampler (innerssl.data.sampling), which Lightning's
# check for a state_dict on the loader itself does not see.
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")


def prepare_data(container: Container, folder: RunFolder, same_folder: bool, rank_zero: bool) -> pl.LightningDataModule:
    """Datasets, splits and decode caches of the run; splits.csv lists every image the run uses (rank 0)."""
    datamodule = container.create_datamodule(folder.root if same_folder else None)
    used = getattr(datamodule, "used_datasets", [])
    if rank_zero and used:
        rows = write_splits_csv(used, folder.root / SPLITS_CSV)
        logger.info("%d images of %d dataset(s) listed in %s", rows, len(used), folder.root / SPLITS_CSV)
    used_images = getattr(datamodule, "used_images", None)  # whole-image datamodules (restoration, segmentation)
    if rank_zero and used_images is not None:
        rows = write_image_splits_csv(used_images, folder.root / SPLITS_CSV)
        logger.info("%d images listed in %s", rows, folder.root / SPLITS_CSV)
    return datamodule


def check_data(
    datamodule: pl.LightningDataModule, container: Container, folder: RunFolder, rank_zero: bool
) -> RunResult:
    """--check_data: report what was found and what could not be read, show the augmentations, do not train."""
    used = getattr(datamodule, "used_datasets", [])
    # The decode cache found the unreadable files of the splits it stored; read the others once.
    decode_every_image(used, ("test",) if getattr(container, "decode_cache", True) else ("train", "val", "test"))
    bad_files = read_bad_file_log(folder.root / BAD_FILE_LOG_NAME)
    if rank_zero:
        log_data_report(used, folder.root / BAD_FILE_LOG_NAME)
        if hasattr(datamodule, "stream_previews"):  # whole-image datamodules log their own summary when built
            write_previews(previews_of(datamodule), folder.root / AUGMENTATION_FOLDER, torch.device("cpu"))
        if bad_files:
            logger.warning("%d unreadable image files; see %s", len(bad_files), folder.root / BAD_FILE_LOG_NAME)
    return RunResult(folder, None, None, len(bad_files), checked_data_only=True)


def locate_run_folder(container: Container, model_name: str) -> tuple[RunFolder, bool]:
    """The run's folder (a new one, or the one --resume / --auto_resume continues), and whether this process
    surely writes into rank 0's folder (for its bad-file log lines)."""
    run_name = container.run_name or shared_run_name(world_size(container))
    if container.auto_resume and not container.resume:
        if RunFolder(container.output_root() / model_name / str(run_name)).last_checkpoint.is_file():
            logger.info("--auto_resume: %s holds checkpoints/last.ckpt; continuing it", run_name)
            container.resume = True
    folder = resolve_run_folder(container.output_root(), model_name, run_name, container.resume)
    same_folder = is_global_zero(container) or run_name is not None or container.resume
    return folder, same_folder


@contextlib.contextmanager
def run_environment(container: Container, model_name: str, folder: RunFolder, rank_zero: bool) -> Iterator[None]:
    """While the run lasts: rank 0's log.txt and config.yaml, and the run name for the processes DDP launches."""
    previous_run_name = os.environ.get(RUN_NAME_ENV)
    os.environ[RUN_NAME_ENV] = folder.root.name  # the processes Lightning launches for DDP inherit it
    handler = open_run_folder(container, model_name, folder) if rank_zero else None
    try:
        if rank_zero:
            logger.info("Run folder: %s", folder.root)
        yield
    finally:
        if previous_run_name is None:
            os.environ.pop(RUN_NAME_ENV, None)
        else:
            os.environ[RUN_NAME_ENV] = previous_run_name
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def build_module(container: Container, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """The container's LightningModule, in the memory format and compiled as the run asks."""
    module = container.create_lightning_module(datamodule)
    if container.channels_last:
        # The weights too, so convolutions run in NHWC without converting layouts at every layer.
        module = module.to(memory_format=torch.channels_last)
    if container.compile:
        compile_networks(module)
    return module


def build_trainer(
    container: Container, folder: RunFolder, datamodule: pl.LightningDataModule, module: nn.Module | None = None
) -> tuple[pl.Trainer, ModelCheckpoint | None]:
    """The Lightning trainer with the container's callbacks and innerssl's outputs, and its best-checkpoint
    callback (None where the container monitors no metric)."""
    best = best_checkpoint_callback(container, folder)
    callbacks = [
        *container.create_callbacks(datamodule),
        LastCheckpoint(folder.last_checkpoint, container.checkpoint_every_n_minutes),
        *([best] if best is not None else []),
        TQDMProgressBar(refresh_rate=progress_bar_refresh_rate(container)),
        AugmentationPreviews(folder.root / AUGMENTATION_FOLDER),
        EpochMetricsWriter(folder.metrics_csv, folder.charts),
    ]
    trainer = pl.Trainer(
        max_epochs=container.num_epochs,
        precision=container.precision,
        callbacks=callbacks,
        plugins=[DurableCheckpointIO()],
        logger=TensorBoardLogger(folder.root, name="tensorboard", version=""),
        default_root_dir=folder.root,
        log_every_n_steps=LOG_EVERY_N_STEPS,
        **hardware(container, module),
    )
    return trainer, best


def fit(
    container: Container,
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    folder: RunFolder,
) -> None:
    """Train, from the run's last.ckpt with --resume; nothing for a test-only run."""
    if container.test_only_checkpoint_path() is not None:
        return
    resume_from = folder.last_checkpoint if container.resume else None
    if resume_from is not None:
        logger.info("Resuming from %s", resume_from)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)


def evaluate_on_test_split(
    container: Container,
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    folder: RunFolder,
    rank_zero: bool,
) -> dict[str, float]:
    """The test stage of runs that have one (classifiers, restoration, segmentation), on the test-only, best or last
    checkpoint. A container with its own ``test_stage`` (whole-image tasks) runs it on global rank 0 only."""
    if not container.has_test_stage():
        return {}
    best = folder.best_checkpoint if folder.best_checkpoint.is_file() else None
    checkpoint = container.test_only_checkpoint_path() or best or folder.last_checkpoint
    own_test_stage = getattr(container, "test_stage", None)
    if own_test_stage is not None:
        return own_test_stage(module, datamodule, checkpoint, folder.root) if rank_zero else {}
    splits = getattr(datamodule, "splits", None)
    if splits is None or splits.test is None:
        return {}
    from innerssl.eval.test_report import run_test_stage

    return run_test_stage(trainer, module, datamodule, checkpoint, folder.root if rank_zero else None)


def summarise(
    container: Container,
    folder: RunFolder,
    best: ModelCheckpoint | None,
    datamodule: pl.LightningDataModule,
    test_metrics: dict[str, float],
) -> RunResult:
    """What the run produced: best metric, unreadable files (logged), test metrics, training images."""
    if container.test_only_checkpoint_path() is not None:
        best = None
    bad_files = read_bad_file_log(folder.root / BAD_FILE_LOG_NAME)
    if bad_files:
        logger.warning(
            "%d unreadable image files were skipped; see %s", len(bad_files), folder.root / BAD_FILE_LOG_NAME
        )
    best_value = float(best.best_model_score) if best is not None and best.best_model_score is not None else None
    splits = getattr(datamodule, "splits", None)
    used_images = getattr(datamodule, "used_images", None)  # whole-image datamodules (restoration, segmentation)
    if splits is not None:
        num_train_images: int | None = len(splits.train)
    else:
        num_train_images = len(used_images["train"]) if used_images is not None else None
    return RunResult(folder, best.monitor if best else None, best_value, len(bad_files), test_metrics, num_train_images)


def train(container: Container, model_name: str) -> RunResult:
    """Run the container's task end to end in named steps: locate the run folder, prepare the data, build the
    module and trainer, fit, test, summarise. Returns where the outputs are and the best metric.

    Under DDP every process runs this function. Only global rank 0 writes config.yaml and log.txt (Lightning
    writes checkpoints, TensorBoard logs and, through ``EpochMetricsWriter``, metrics.csv and charts on rank 0
    only); all processes agree on the run folder (see ``innerssl.distributed.shared_run_name``).
    """
    container.validate()
    rank_zero = is_global_zero(container)
    folder, same_folder = locate_run_folder(container, model_name)
    with run_environment(container, model_name, folder, rank_zero):
        pl.seed_everything(container.random_seed, workers=True)
        datamodule = prepare_data(container, folder, same_folder, rank_zero)
        if container.check_data:
            return check_data(datamodule, container, folder, rank_zero)
        module = build_module(container, datamodule)
        trainer, best = build_trainer(container, folder, datamodule, module)
        fit(container, trainer, module, datamodule, folder)
        test_metrics = evaluate_on_test_split(container, trainer, module, datamodule, folder, rank_zero)
        return summarise(container, folder, best, datamodule, test_metrics)

"""kNN evaluation of an encoder: the label-fraction comparison's mode that trains nothing.

The labeled training images (the ``--label_fraction`` subset) are embedded once with the eval preprocess into a
bank; every validation and test image is classified by the rule of the kNN monitor
(:func:`innerssl.eval.knn.knn_vote_probabilities`): the votes of its ``knn_k`` nearest bank embeddings by cosine
similarity, weighted by ``exp(similarity / knn_temperature)``. With a handful of labels there is nothing to
under- or over-train, so it is a robust second opinion beside the linear probe.

A kNN run is a run folder like a classifier's: ``config.yaml``, ``log.txt``, ``metrics.csv`` (one row:
``classifier/val_*`` and ``classifier/test_*``), ``test_predictions.csv`` and ``charts/test_roc.png``; there
is no checkpoint (the "model" is the bank). The encoder is the classifier container's
(:meth:`~innerssl.containers.classifier.SSLClassifierContainer.create_encoder`): built from the SSL checkpoint's
encoder spec (with its construction options) and weights, from ``--encoder_weights``, or seeded random. It runs
outside Lightning, on the first GPU of this process (``LOCAL_RANK``) or the CPU; under DDP every process computes
the same result and global rank 0 writes it.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

import pandas as pd
import pytorch_lightning as pl
import torch

from innerssl.containers.groups.data import BAD_FILE_LOG_NAME
from innerssl.data.datasets.base import read_bad_file_log
from innerssl.distributed import gpus_per_node, is_global_zero
from innerssl.eval.classifier import METRIC_PREFIX
from innerssl.eval.embeddings import Embedded, embed_dataset, frozen_encoder_embedding
from innerssl.eval.knn import knn_vote_probabilities
from innerssl.eval.metrics import classification_metrics
from innerssl.eval.test_report import write_test_report
from innerssl.outputs.checkpoints import describe_encoder
from innerssl.outputs.run_folder import resolve_run_folder

if TYPE_CHECKING:
    from innerssl.containers.classifier import SSLClassifierContainer
    from innerssl.training import RunResult

logger = logging.getLogger(__name__)


def evaluation_device(container: SSLClassifierContainer) -> torch.device:
    """This process's GPU (``LOCAL_RANK`` under a launcher) when the container trains on GPUs, else the CPU."""
    if not gpus_per_node(container):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def run_knn_evaluation(container: SSLClassifierContainer, model_name: str) -> RunResult:
    """Embed the labeled training subset, classify the validation and test images by kNN votes, write the run."""
    from innerssl.training import RunResult, open_run_folder  # training imports the containers, which import this

    container.validate()
    rank_zero = is_global_zero(container)
    folder = resolve_run_folder(container.output_root(), model_name, container.run_name, resume=False)
    handler = open_run_folder(container, model_name, folder) if rank_zero else None
    try:
        if rank_zero:
            logger.info("Run folder: %s (kNN evaluation, k=%d)", folder.root, container.knn_k)
        pl.seed_everything(container.random_seed, workers=True)
        datamodule = container.create_datamodule(folder.root if rank_zero else None)
        splits, stream = datamodule.splits, datamodule.eval_stream
        label_info = splits.label_info
        device = evaluation_device(container)
        encoder = container.create_encoder().to(device)
        logger.info("kNN encoder: %s", describe_encoder(container.classifier_encoder_spec()))
        if container.channels_last:
            encoder = encoder.to(memory_format=torch.channels_last)
        embed_images = frozen_encoder_embedding(encoder, container.precision, container.channels_last)

        def embed_split(dataset: object) -> Embedded:
            return embed_dataset(
                stream.loader_dataset(dataset),  # type: ignore[arg-type]
                embed_images,
                device,
                int(encoder.feature_dim),
                label_info,
                batch_size=container.linear_head_batch_size,
                num_workers=container.num_workers,
                device_transform=stream.to_encoder if stream.on_device else None,
            )

        bank = embed_split(splits.train)
        metrics: dict[str, float] = {}
        for split in ("val", "test"):
            dataset = getattr(splits, split)
            if dataset is None:
                continue
            queries = embed_split(dataset)
            probabilities = knn_vote_probabilities(
                queries.features, bank.features, bank.labels, label_info, container.knn_k, container.knn_temperature
            ).cpu()
            targets = queries.labels.cpu()
            for name, value in classification_metrics(probabilities, targets, label_info).items():
                metrics[f"{METRIC_PREFIX}/{split}_{name}"] = value
            if split == "test" and rank_zero:
                write_test_report(folder.root, probabilities, targets, label_info, splits.test)
        logger.info(
            "kNN on %d training embeddings: %s", len(bank), ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        )
        if rank_zero:
            pd.DataFrame([{"epoch": 0, "step": 0, **metrics}]).to_csv(folder.metrics_csv, index=False)
        bad_files = read_bad_file_log(folder.root / BAD_FILE_LOG_NAME)
        val_auroc = metrics.get(f"{METRIC_PREFIX}/val_auroc", math.nan)
        test_metrics = {name: value for name, value in metrics.items() if name.startswith(f"{METRIC_PREFIX}/test_")}
        return RunResult(
            folder, f"{METRIC_PREFIX}/val_auroc", val_auroc, len(bad_files), test_metrics, len(splits.train)
        )
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()

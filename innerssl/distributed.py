"""Multi-process (DDP) training: how many processes train, the learning rate they use, and resuming on another
number of processes.

Lightning does the distributed work itself (``strategy="ddp"``: gradient averaging, ``DistributedSampler``
on every loader, rank-0-only checkpoints and loggers); this module holds innerssl's few rules around it:

- the number of processes: ``devices`` (GPUs, or CPU processes for gloo tests) x ``num_nodes``;
- the linear learning-rate scaling rule ``lr = learning_rate * global_batch / reference_batch``, applied
  only when more than one process trains;
- DDP's search for parameters without gradients, switched on only for networks that hold such parameters
  (:func:`parameters_without_gradients`), since the search costs a graph traversal every step;
- this process's rank before Lightning is running, from the launcher's environment variables, so that
  only rank 0 writes the run folder's config and log, and every process agrees on the run folder;

Resuming on another number of processes needs nothing here: the schedules follow the fraction of training
done (``innerssl.optim.WarmupCosineModule``), not a step count, and take this run's learning rate.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from innerssl.containers.base import Container

logger = logging.getLogger(__name__)

RUN_NAME_ENV = "INNERSSL_RUN_NAME"
"""Set by rank 0 around training so that the processes Lightning launches use the same run folder."""
JOB_ID_ENVS = ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "AZUREML_RUN_ID")
"""Job ids that every process of a job started by torchrun, SLURM or Azure ML shares."""


def gpus_per_node(container: Container) -> int:
    """GPUs this node trains on: all visible ones for -1, at most ``max_num_gpus`` otherwise; 0 on the CPU."""
    if container.max_num_gpus == 0:
        return 0
    gpus = torch.cuda.device_count()
    if container.max_num_gpus > 0:
        gpus = min(gpus, container.max_num_gpus)
    return gpus


def processes_per_node(container: Container) -> int:
    """Training processes on each node: one per GPU, or ``num_cpu_processes`` on the CPU."""
    return gpus_per_node(container) or container.num_cpu_processes


def world_size(container: Container) -> int:
    """Number of training processes in all: processes per node x nodes."""
    return processes_per_node(container) * container.num_nodes


def global_rank_from_env(devices_per_node: int = 1) -> int:
    """This process's global rank from the launcher's variables; 0 when no launcher started it.

    torchrun and Azure ML set RANK; processes Lightning launches itself get LOCAL_RANK and NODE_RANK, and the
    first process of each node has the NODE_RANK its user set (checked before SLURM_PROCID, which an
    interactive SLURM shell also sets); ``srun`` sets SLURM_PROCID.
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "LOCAL_RANK" in os.environ or "NODE_RANK" in os.environ:
        node_rank = int(os.environ.get("NODE_RANK", 0))
        return node_rank * devices_per_node + int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return 0


def is_global_zero(container: Container) -> bool:
    return global_rank_from_env(processes_per_node(container)) == 0


def shared_run_name(processes: int) -> str | None:
    """A default run name every process of this job agrees on, or None where there is none.

    Processes Lightning launched inherit rank 0's name in ``INNERSSL_RUN_NAME``; when more than one process
    trains, processes started by torchrun (with a rendezvous id), SLURM or Azure ML share their job id.
    """
    name = os.environ.get(RUN_NAME_ENV)
    if name:
        return name
    if processes <= 1:
        return None
    for variable in JOB_ID_ENVS:
        job_id = os.environ.get(variable, "")
        if job_id and job_id != "none":
            return f"job-{job_id}"
    return None


def scaled_learning_rate(learning_rate: float, per_process_batch: int, processes: int, reference_batch: int) -> float:
    """The linear scaling rule (Goyal et al., 2017): ``learning_rate * global_batch / reference_batch``.

    ``global_batch = per_process_batch * processes``; one process keeps ``learning_rate`` as it is.
    """
    if processes <= 1:
        return learning_rate
    return learning_rate * per_process_batch * processes / reference_batch


def effective_learning_rate(container: Container, per_process_batch: int) -> float:
    """The learning rate the module trains with: ``container.learning_rate``, scaled with the global batch when
    more than one process trains and ``scale_learning_rate_with_batch_size`` is set (logged on rank 0)."""
    base = container.learning_rate
    processes = world_size(container)
    if processes <= 1 or not container.scale_learning_rate_with_batch_size:
        return base
    reference = container.learning_rate_reference_batch_size
    learning_rate = scaled_learning_rate(base, per_process_batch, processes, reference)
    if is_global_zero(container):
        logger.info(
            "Learning rate scaled with the global batch: %g x (%d per process x %d processes) / %d = %g "
            "(--scale_learning_rate_with_batch_size=false keeps %g)",
            base,
            per_process_batch,
            processes,
            reference,
            learning_rate,
            base,
        )
    return learning_rate


def parameters_without_gradients(module: nn.Module) -> list[str]:
    """Names of trainable parameters that ``module``'s forward never uses, so that DDP, which waits for every
    parameter's gradient, needs ``find_unused_parameters=True``.

    Known case: MONAI's ``TransformerBlock`` (ViT, ViTAutoEnc, UNETR, masked-autoencoder ViT) builds
    ``norm_cross_attn`` in every block (MONAI >= 1.4; ``cross_attn`` too in some versions) and uses them only with
    ``with_cross_attention=True``. Found by type and attribute, not by name lists, so versions without them give
    none and weight loading never depends on their presence.
    """
    try:
        from monai.networks.blocks.transformerblock import TransformerBlock
    except ImportError:  # pragma: no cover - MONAI is a dependency
        return []
    unused: list[str] = []
    for name, child in module.named_modules():
        if isinstance(child, TransformerBlock) and not getattr(child, "with_cross_attention", False):
            for attribute in ("norm_cross_attn", "cross_attn"):
                part = getattr(child, attribute, None)
                if isinstance(part, nn.Module):
                    prefix = f"{name}.{attribute}" if name else attribute
                    unused += [
                        f"{prefix}.{key}" for key, parameter in part.named_parameters() if parameter.requires_grad
                    ]
    return unused

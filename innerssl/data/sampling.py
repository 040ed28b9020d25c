"""Training-set order that a resumed run can reproduce: shuffled per epoch, sharded per process, resumable mid-epoch.

A run resumed from a checkpoint written in the middle of an epoch must train on exactly the images that epoch had
left. :class:`ResumableSampler` therefore draws each epoch's order from ``(seed, epoch)`` alone (as PyTorch's
``DistributedSampler``, which it extends, so Lightning leaves it in place under DDP) and, for the epoch a run
resumes in, leaves out what the killed run had already trained on. Its length stays the whole epoch's, which is
what Lightning's loop expects of a resumable loader: it restores its own batch counter and stops when the
iterator is exhausted.

:class:`TrainingPosition` is where training stands, as recorded in checkpoints by
:class:`innerssl.outputs.last_checkpoint.LastCheckpoint` and read back by the data modules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import Dataset, DistributedSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPosition:
    """Training continues in ``epoch`` after its first ``batches_done`` batches per process, trained on by
    ``world_size`` processes (0 batches: at the start of the epoch)."""

    epoch: int = 0
    batches_done: int = 0
    world_size: int = 1

    def samples_done(self, batch_size: int) -> int:
        """Positions of the epoch's global order already trained on by a loader of ``batch_size`` per process."""
        return self.batches_done * batch_size * self.world_size

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, int]) -> TrainingPosition:
        return cls(**{key: int(state[key]) for key in ("epoch", "batches_done", "world_size")})


class ResumableSampler(DistributedSampler):
    """Shuffled indices of one process's share of each epoch, reproducible from ``(seed, epoch)``.

    - The epoch's global order is ``randperm`` seeded with ``seed + epoch`` (DistributedSampler's rule), padded by
      repetition to a multiple of ``num_replicas``; process ``rank`` takes every ``num_replicas``-th index.
    - ``num_samples`` (per process) may ask for more than one pass over the data per epoch, as the online linear
      head's loader does to give every SSL step a labeled batch: further passes continue with the next
      permutations of the same generator.
    - ``resume_epoch``, ``resume_samples_done``: in that epoch the first ``resume_samples_done`` positions of the
      global order are left out (the killed run trained on them, on any number of processes); the rest is shared
      among this run's processes. The sampler starts at ``resume_epoch``; iterating again gives the same indices.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        resume_epoch: int = 0,
        resume_samples_done: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.cycles = num_samples is not None
        if num_samples is not None:
            self.num_samples = num_samples
            self.total_size = num_samples * num_replicas
        self.resume_epoch = resume_epoch
        self.resume_samples_done = resume_samples_done
        self.epoch = resume_epoch

    def global_order(self) -> list[int]:
        """This epoch's order of all processes' indices, ``total_size`` long."""
        size = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        # An asked-for length passes over the data in fresh permutations; otherwise pad one, as DistributedSampler.
        passes = math.ceil(self.total_size / size) if self.cycles else max(1, self.total_size // size)
        order: list[int] = []
        for _ in range(passes):
            order.extend(torch.randperm(size, generator=generator).tolist())
        if len(order) < self.total_size:  # pad as DistributedSampler does
            order += (order * math.ceil(self.total_size / len(order)))[: self.total_size - len(order)]
        return order[: self.total_size]

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if self.epoch == self.resume_epoch and self.resume_samples_done > 0:
            remaining = order[min(self.resume_samples_done, len(order)) :]
            per_process = len(remaining) // self.num_replicas
            return iter(remaining[self.rank : per_process * self.num_replicas : self.num_replicas])
        return iter(order[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

"""ResumableSampler: per-epoch orders from (seed, epoch), DDP shares, and leaving out what a killed run trained on."""

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from innerssl.data.sampling import ResumableSampler, TrainingPosition


def dataset(size: int) -> TensorDataset:
    return TensorDataset(torch.arange(size))


def test_an_epoch_is_distributed_samplers_order() -> None:
    ours = ResumableSampler(dataset(37), num_replicas=3, rank=1, seed=5)
    reference = DistributedSampler(dataset(37), num_replicas=3, rank=1, shuffle=True, seed=5)
    for epoch in (0, 4):
        ours.set_epoch(epoch)
        reference.set_epoch(epoch)
        assert list(ours) == list(reference)
        assert len(ours) == len(reference) == 13


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    first = ResumableSampler(dataset(50), seed=1)
    first.set_epoch(3)
    again = ResumableSampler(dataset(50), seed=1, resume_epoch=3)  # a new process, resumed in epoch 3
    assert list(first) == list(again) == list(again)  # iterating does not consume anything
    other_epoch = ResumableSampler(dataset(50), seed=1, resume_epoch=2)
    assert list(other_epoch) != list(first)
    assert sorted(first) == list(range(50))


@pytest.mark.parametrize(("old_world", "new_world"), [(1, 1), (2, 2), (1, 2), (2, 1)])
def test_a_resumed_epoch_trains_on_exactly_what_was_left(old_world: int, new_world: int) -> None:
    size, batch, done = 64, 4, 3
    global_order = ResumableSampler(dataset(size), seed=9, resume_epoch=2).global_order()
    position = TrainingPosition(epoch=2, batches_done=done, world_size=old_world)
    shares = [
        list(
            ResumableSampler(
                dataset(size),
                num_replicas=new_world,
                rank=rank,
                seed=9,
                resume_epoch=2,
                resume_samples_done=position.samples_done(batch),
            )
        )
        for rank in range(new_world)
    ]
    left = global_order[done * batch * old_world :]
    assert sorted(i for share in shares for i in share) == sorted(left)
    assert len({len(share) for share in shares}) == 1  # every process gets as many (DDP needs equal steps)
    # The next epoch is whole again.
    sampler = ResumableSampler(dataset(size), seed=9, resume_epoch=2, resume_samples_done=12)
    assert len(sampler) == size and len(list(sampler)) == size - 12
    sampler.set_epoch(3)
    assert len(list(sampler)) == size


def test_more_samples_than_the_data_continue_with_new_permutations() -> None:
    sampler = ResumableSampler(dataset(10), seed=0, num_samples=25)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 25
    for start in (0, 10):
        assert sorted(indices[start : start + 10]) == list(range(10))  # each pass is a permutation
    assert indices[:10] != indices[10:20]

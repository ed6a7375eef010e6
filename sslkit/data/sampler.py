"""One batch sampler for every dataset: seeded per epoch, sharded across ranks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Yields index batches of ``batch_size`` (the per-rank batch).

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same
    order. Each step takes the next ``batch_size * world_size`` indices (the global batch) and
    rank ``r`` of ``world_size`` takes the ``r``-th of ``world_size`` contiguous, balanced slices
    of it. Concatenating the ranks' batches in rank order (what ``all_gather`` does) therefore
    gives back exactly the global batch of a single process, in the same order: the gathered
    loss, the queue rows and anything else order-dependent match the one-process run.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # called with the epoch at the start of each pass; returns how many batches to skip
        # (a run resuming from a checkpoint written mid-epoch)
        self.resume_skip: Callable[[int], int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> "EpochBatchSampler":
        # Lightning calls set_epoch on ``dataloader.batch_sampler.sampler`` at each epoch start
        return self

    def _global_order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._global_order()
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            order = order[: len(order) // global_batch * global_batch]
        skip = self.resume_skip(self.epoch) if self.resume_skip is not None else 0
        for start in range(skip * global_batch, len(order), global_batch):
            chunk = order[start : start + global_batch]
            mine = chunk.tensor_split(self.world_size)[self.rank]
            if len(mine):
                yield mine.tolist()

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

"""A training DataLoader that resumes mid-epoch: the next batch after a restart is the one the
interrupted run would have trained on next.

Two things make that possible:
- the order of every epoch is a pure function of (seed, epoch), as in ``DistributedSampler``
  (which this sampler is, so Lightning also leaves it in place under DDP, where each rank takes
  its own share of every epoch);
- the loader has ``state_dict``/``load_state_dict``: Lightning stores that state in each
  checkpoint and hands it back on resume, and the sampler then skips the batches already trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the running DDP job, (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded shuffle per epoch, one shard per rank) that can start late."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0) -> None:
        rank, world = rank_and_world()
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.skip_batches = 0
        self.skip_epoch = -1  # the epoch that skip_batches applies to

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        # Cut only the interrupted epoch itself: if the checkpoint closed an epoch, Lightning has
        # moved on to the next one (set_epoch) and that one starts from its first batch.
        skip = self.skip_batches if self.epoch == self.skip_epoch else 0
        self.skip_batches, self.skip_epoch = 0, -1
        return iter(indices[skip * self.batch_size :])


class EveryItemOnce(DistributedSampler):
    """This rank's share of an evaluation set, in order: items rank, rank + world, ... Across the
    ranks every item is scored exactly once. ``DistributedSampler`` pads its last round with
    repeats, which a validation mean summed over the ranks would count twice."""

    def __init__(self, dataset: Dataset) -> None:
        rank, world = rank_and_world()
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=False)  # type: ignore[arg-type]

    def _share(self) -> range:
        return range(self.rank, len(self.dataset), self.num_replicas)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(self._share())

    def __len__(self) -> int:
        return len(self._share())


class ResumableLoader(DataLoader):
    """A shuffling DataLoader whose position in the epoch is saved in Lightning checkpoints."""

    sampler: ResumableSampler

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        sampler = ResumableSampler(dataset, batch_size, shuffle, seed)
        super().__init__(
            dataset,
            batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_fn,
        )
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.sampler
        self._yielded = sampler.skip_batches if sampler.epoch == sampler.skip_epoch else 0
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        # The loader has a length, so Lightning's data fetcher does not fetch ahead: every batch
        # handed out so far has been trained on when a checkpoint is written.
        return {
            "epoch": self.sampler.epoch,
            "consumed_batches": self._yielded,
            "batch_size": self.sampler.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip_epoch = state["epoch"]
        consumed, before = state["consumed_batches"], state.get("batch_size", self.sampler.batch_size)
        if before != self.sampler.batch_size:
            # Resumed with another batch size: skip the examples already trained on, not the count
            # of batches (which would repeat or drop data); a part batch's worth is seen again.
            consumed = consumed * before // self.sampler.batch_size
            log.warning(
                "resumed with batch size %d where the checkpoint's run used %d: the epoch goes on after "
                "its first %d examples",
                self.sampler.batch_size,
                before,
                consumed * self.sampler.batch_size,
            )
        self.sampler.skip_batches = consumed

"""The resumable training loader: seeded epochs, exact mid-epoch resume, one shard per DDP rank."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import llm_lab.data.resumable as resumable
from llm_lab.data.resumable import ResumableLoader

DATA = TensorDataset(torch.arange(40))


def _epoch(loader: ResumableLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)  # what Lightning does at the start of every epoch
    return [batch[0].tolist() for batch in loader]


def test_each_epoch_is_a_seeded_permutation():
    loader = ResumableLoader(DATA, batch_size=8, seed=3)
    e0, e1 = _epoch(loader, 0), _epoch(loader, 1)
    assert sorted(sum(e0, [])) == list(range(40)) and e0 != e1
    assert _epoch(ResumableLoader(DATA, batch_size=8, seed=3), 1) == e1


def test_a_restored_loader_continues_with_the_next_batch():
    original = ResumableLoader(DATA, batch_size=8, seed=0)
    original.sampler.set_epoch(2)
    it = iter(original)
    seen = [next(it)[0].tolist() for _ in range(3)]
    state = original.state_dict()  # what a checkpoint after 3 steps holds
    rest = [b[0].tolist() for b in it]

    fresh = ResumableLoader(DATA, batch_size=8, seed=0)
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)  # Lightning re-sets the (restored) epoch before iterating
    assert [b[0].tolist() for b in fresh] == rest
    assert seen + rest == _epoch(ResumableLoader(DATA, batch_size=8, seed=0), 2)
    assert len(_epoch(fresh, 3)) == 5  # the next epoch is whole again


def test_a_resume_with_another_batch_size_skips_the_examples_trained_on(caplog: pytest.LogCaptureFixture):
    """3 batches of 8 = 24 examples trained on; resumed with batches of 5, the epoch goes on after
    its first 20 (4 batches of 5): nothing skipped that was not trained on."""
    original = ResumableLoader(DATA, batch_size=8, seed=0)
    original.sampler.set_epoch(1)
    it = iter(original)
    for _ in range(3):
        next(it)
    state = original.state_dict()
    order = sum(_epoch(ResumableLoader(DATA, batch_size=8, seed=0), 1), [])  # the epoch's permutation
    resumed = ResumableLoader(DATA, batch_size=5, seed=0)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert sum((b[0].tolist() for b in resumed), []) == order[20:]
    assert "batch size 5 where the checkpoint's run used 8" in caplog.text


def test_a_checkpoint_at_the_end_of_an_epoch_does_not_cut_the_next_one():
    loader = ResumableLoader(DATA, batch_size=8, seed=0)
    _epoch(loader, 0)
    fresh = ResumableLoader(DATA, batch_size=8, seed=0)
    fresh.load_state_dict(loader.state_dict())
    assert len(_epoch(fresh, 1)) == 5


def test_under_ddp_every_sample_is_seen_by_exactly_one_rank_per_epoch(monkeypatch: pytest.MonkeyPatch):
    shards = []
    for rank in range(2):
        monkeypatch.setattr(resumable, "rank_and_world", lambda r=rank: (r, 2))
        shards.append(sum(_epoch(ResumableLoader(DATA, batch_size=4, seed=1), 0), []))
    assert len(shards[0]) == len(shards[1]) == 20
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(40))

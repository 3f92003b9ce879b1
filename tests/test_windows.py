from pathlib import Path

import numpy as np
import pytest

from llm_lab.data.windows import TokenWindows, id_dtype, write_ids
from llm_lab.errors import ArgumentError


def test_windows_for_a_stride_are_exactly_the_expected_pairs():
    ids = np.arange(10, dtype=np.uint16)
    ds = TokenWindows(ids, context_length=4, stride=3)
    pairs = [(x.tolist(), y.tolist()) for x, y in ds]
    assert pairs == [
        ([0, 1, 2, 3], [1, 2, 3, 4]),
        ([3, 4, 5, 6], [4, 5, 6, 7]),
    ]
    assert [x.tolist() for x, _ in TokenWindows(ids, 4, 1)][-1] == [5, 6, 7, 8]


def test_validation_windows_never_overlap_training_windows():
    ids = np.arange(1000, dtype=np.uint32)
    split = 800
    train = TokenWindows(ids, 16, 5, 0, split)
    val = TokenWindows(ids, 16, 16, split, len(ids))
    train_tokens = {int(t) for x, y in train for t in (*x, *y)}
    val_tokens = {int(t) for x, y in val for t in (*x, *y)}
    assert not train_tokens & val_tokens
    assert max(train_tokens) < split <= min(val_tokens)


def test_ids_are_stored_compactly_and_memory_mapped(tmp_path: Path):
    assert id_dtype(50257) == np.uint16 and id_dtype(100_000) == np.uint32
    mm = write_ids(tmp_path / "ids.bin", ([i, i + 1] for i in range(0, 100, 2)), vocab_size=300)
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint16 and mm.tolist() == list(range(100))
    assert (tmp_path / "ids.bin").stat().st_size == 200


def test_bad_windows():
    with pytest.raises(ArgumentError, match="^stride"):
        TokenWindows(np.arange(10), 4, 0)
    with pytest.raises(ArgumentError, match="^context_length: a split has 4 tokens"):
        TokenWindows(np.arange(4), 4)

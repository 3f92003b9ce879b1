import numpy as np
import pytest

from llm_lab.data.windows import TokenWindows, id_dtype
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


def test_ids_are_stored_in_the_smallest_unsigned_type():
    assert id_dtype(50257) == np.uint16 and id_dtype(2**16) == np.uint16 and id_dtype(100_000) == np.uint32


def test_bad_windows():
    with pytest.raises(ArgumentError, match="^stride"):
        TokenWindows(np.arange(10), 4, 0)
    # a stride past the window would skip tokens that no window ever trains on
    with pytest.raises(ArgumentError, match="^stride: 5 > context_length=4 \\(use 1..context_length"):
        TokenWindows(np.arange(10), 4, 5)
    TokenWindows(np.arange(10), 4, 4)  # adjacent windows are fine
    with pytest.raises(ArgumentError, match="^context_length: a split has 4 tokens"):
        TokenWindows(np.arange(4), 4)

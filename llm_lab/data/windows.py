"""Next-token training windows over a stream of token ids (Raschka ch. 2.6).

A window of ``context_length`` ids is the input x; the same window shifted by one token is the
target y, so one window trains T predictions at once. ``stride`` is the step between window
starts: ``stride == context_length`` gives non-overlapping windows (each token is a target once
per epoch), a smaller stride gives overlapping ones.

Ids are stored compactly (uint16 when the vocabulary fits, else uint32) in files that are
memory-mapped (``llm_lab.data.prepare``), so a corpus larger than memory trains the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from llm_lab.errors import ArgumentError


def id_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    """The smallest unsigned integer type that holds every id of the vocabulary."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


class Ids(Protocol):
    """What windows read ids from: a 1-D numpy array, a memory map, or prepared token shards."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


class TokenWindows(Dataset):
    """Windows ``ids[s : s+T]`` → ``ids[s+1 : s+T+1]`` for s = 0, stride, 2·stride, …"""

    def __init__(self, ids: Ids, context_length: int, stride: int | None = None) -> None:
        if context_length < 1:
            raise ArgumentError("context_length", f"{context_length} < 1", "use a positive length")
        stride = context_length if stride is None else stride
        if stride < 1:
            raise ArgumentError("stride", f"{stride} < 1", "use 1..context_length")
        if stride > context_length:  # the tokens between two windows would never be trained on
            raise ArgumentError(
                "stride", f"{stride} > context_length={context_length}", "use 1..context_length"
            )
        if len(ids) < context_length + 1:
            raise ArgumentError(
                "context_length",
                f"a split has {len(ids)} tokens, fewer than one window of context_length + 1 = "
                f"{context_length + 1}",
                "give more text or lower the context length",
            )
        self.ids, self.context_length, self.stride = ids, context_length, stride
        self.n_windows = (len(ids) - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n_windows:
            raise IndexError(f"window {i} of {self.n_windows}")  # also ends plain `for x, y in windows`
        s = i * self.stride
        chunk = torch.from_numpy(self.ids[s : s + self.context_length + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]

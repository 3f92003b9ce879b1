"""Next-token training windows over a stream of token ids (Raschka ch. 2.6).

A window of ``context_length`` ids is the input x; the same window shifted by one token is the
target y, so one window trains T predictions at once. ``stride`` is the step between window
starts: ``stride == context_length`` gives non-overlapping windows (each token is a target once
per epoch), a smaller stride gives overlapping ones.

Ids are stored compactly (uint16 when the vocabulary fits, else uint32) and can live in a file
that is memory-mapped, so a corpus larger than memory trains the same way (nanoGPT's ``.bin``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from llm_lab.errors import ArgumentError


def id_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    """The smallest unsigned integer type that holds every id of the vocabulary."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def write_ids(path: str | Path, chunks: Iterable[Iterable[int]], vocab_size: int) -> np.memmap:
    """Stream id chunks to a raw binary file (written to a temporary name, then renamed) and map it.

    Memory stays bounded by one chunk, whatever the corpus size.
    """
    path = Path(path)
    dtype = id_dtype(vocab_size)
    # A temporary name of its own: under DDP every rank writes the same ids at the same time.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks:
            np.asarray(list(chunk), dtype=dtype).tofile(f)
    os.replace(tmp, path)
    return np.memmap(path, dtype=dtype, mode="r")


class TokenWindows(Dataset):
    """Windows ``ids[s : s+T]`` → ``ids[s+1 : s+T+1]`` for s = start, start+stride, … within [start, end).

    ``start``/``end`` let train and validation windows come from disjoint parts of one stream: no
    window reads a token outside its part, so no validation target is ever seen in training.
    """

    def __init__(
        self,
        ids: np.ndarray,
        context_length: int,
        stride: int | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> None:
        if context_length < 1:
            raise ArgumentError("context_length", f"{context_length} < 1", "use a positive length")
        stride = context_length if stride is None else stride
        if stride < 1:
            raise ArgumentError("stride", f"{stride} < 1", "use 1..context_length")
        end = len(ids) if end is None else end
        if end - start < context_length + 1:
            raise ArgumentError(
                "context_length",
                f"a split has {end - start} tokens, fewer than one window of context_length + 1 = "
                f"{context_length + 1}",
                "give more text or lower the context length",
            )
        self.ids, self.context_length, self.stride = ids, context_length, stride
        self.start = start
        self.n_windows = (end - start - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def window_start(self, i: int) -> int:
        return self.start + i * self.stride

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n_windows:
            raise IndexError(f"window {i} of {self.n_windows}")  # also ends plain `for x, y in windows`
        s = self.window_start(i)
        chunk = torch.from_numpy(self.ids[s : s + self.context_length + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]

"""Pre-tokenization: cutting text into the pieces that byte-pair merges may never cross.

BPE is not run on raw text. GPT-2 first cuts text into "pre-tokens" with a regular expression
so that no merge crosses from one character category to another (Radford et al. 2019, §2.2): a
token like ``dog.`` can never be learned, while the leading space stays attached to the word
(`` the``). Special tokens such as ``<|endoftext|>`` are cut out *before* that, so they are never
split or merged (Stanford CS336 assignment 1, §2.4-2.5).

Training only needs how often each pre-token occurs, which is why the corpus is reduced to a
``Counter`` of unique pre-tokens here; that count is computed in parallel over chunks whose
boundaries are guaranteed pre-token boundaries, so the parallel result equals the serial one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import regex

from llm_lab.errors import DataError

# The pattern of GPT-2's encoder.py, written with a non-capturing group as tiktoken does. It is the
# same expression that HF `tokenizers` uses for its ByteLevel pre-tokenizer, which is what makes
# ids interchangeable between the three implementations.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_REGEX = regex.compile(GPT2_PATTERN)

# Where text without special tokens is cut into chunks: after a newline that stands between two
# printable ASCII characters. The newline is then a pre-token of its own whether or not the text
# goes on (a longer whitespace run would be split differently at the end of a chunk, because
# `\s+(?!\S)` looks ahead), and no alternative runs from it into the next character.
_LINE_BOUNDARY = regex.compile(r"(?<=[!-~])\n(?=[!-~])")
_LINE_BOUNDARY_BYTES = regex.compile(rb"(?<=[!-~])\n(?=[!-~])")

# Below this many characters a worker pool costs more to start than it saves.
PARALLEL_MIN_CHARS = 1 << 20
Job = TypeVar("Job")


def special_splitter(special_tokens: Iterable[str]) -> regex.Pattern[str] | None:
    """A regex whose ``split`` keeps special tokens as separate parts (odd indices).

    Longer tokens are tried first, so that when one special token is a prefix of another
    (``<|a|>`` and ``<|a|><|b|>``) the longest match wins, as in HF `tokenizers` and tiktoken.
    """
    tokens = sorted(set(special_tokens), key=len, reverse=True)
    if not tokens:
        return None
    return regex.compile("(" + "|".join(regex.escape(t) for t in tokens) + ")")


def count_pretokens(text: str, special_tokens: Sequence[str] = ()) -> Counter[str]:
    """Count GPT-2 pre-tokens in ``text``; special tokens are removed and never counted.

    Counting unique pre-tokens once is the key saving of BPE training (Sennrich et al. 2016, §3.1:
    the merge statistics come from a dictionary of words with their frequencies).
    """
    splitter = special_splitter(special_tokens)
    parts = splitter.split(text)[::2] if splitter else [text]
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(GPT2_REGEX.findall(part))
    return counts


def _boundary_regex(special_tokens: Sequence[str], binary: bool) -> regex.Pattern:
    """Where a chunk may start: at a special token, or (without any) at a safe line start."""
    if special_tokens:
        alternatives = sorted(set(special_tokens), key=len, reverse=True)
        if binary:
            return regex.compile(b"|".join(regex.escape(t.encode()) for t in alternatives))
        return regex.compile("|".join(regex.escape(t) for t in alternatives))
    return _LINE_BOUNDARY_BYTES if binary else _LINE_BOUNDARY


def chunk_text(text: str, n_chunks: int, special_tokens: Sequence[str] = ()) -> list[str]:
    """Cut ``text`` into about ``n_chunks`` pieces at pre-token boundaries (see module doc)."""
    boundary = _boundary_regex(special_tokens, binary=False)
    cuts = [0]
    for i in range(1, n_chunks):
        match = boundary.search(text, max(cuts[-1] + 1, len(text) * i // n_chunks))
        if match is None:
            break
        # A line boundary is the position after the newline; a special token starts its chunk.
        cuts.append(match.start() + (0 if special_tokens else 1))
    cuts.append(len(text))
    return [text[a:b] for a, b in pairwise(cuts) if b > a]


def file_chunk_offsets(path: Path, n_chunks: int, special_tokens: Sequence[str] = ()) -> list[int]:
    """Byte offsets cutting a file into about ``n_chunks`` pieces at pre-token boundaries.

    Only a small window around each guessed offset is read, so the parent process never holds
    the whole file (the CS336 assignment 1 suggestion for parallel pre-tokenization).
    """
    boundary = _boundary_regex(special_tokens, binary=True)
    size = path.stat().st_size
    window = 1 << 16
    # Read a little past the window so that a boundary straddling its end is still found.
    overlap = max((len(t.encode("utf-8")) for t in special_tokens), default=1) + 1
    offsets = [0]
    with path.open("rb") as f:
        for i in range(1, n_chunks):
            position = max(offsets[-1] + 1, size * i // n_chunks)
            while position < size:
                f.seek(position)
                block = f.read(window + overlap)
                match = boundary.search(block)
                if match is not None and match.start() < window:
                    offsets.append(position + match.start() + (0 if special_tokens else 1))
                    break
                position += window
    offsets.append(size)
    return sorted(set(offsets))


def _count_file_range(args: tuple[Path, int, int, Sequence[str]]) -> Counter[str]:
    """Worker: decode one byte range of a file and count its pre-tokens."""
    path, start, end, special_tokens = args
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text near byte {start + e.start}") from None
    return count_pretokens(text, special_tokens)


def _count_texts(args: tuple[list[str], Sequence[str]]) -> Counter[str]:
    """Worker: count the pre-tokens of a batch of documents, each pre-tokenized on its own."""
    texts, special_tokens = args
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(count_pretokens(text, special_tokens))
    return counts


def _pool_map(func: Callable[[Job], Counter[str]], jobs: list[Job], num_workers: int) -> Counter[str]:
    """Run ``func`` over ``jobs`` (in a pool when there is more than one) and add the counts.

    Workers are forked where the platform allows it: spawning would re-import the caller's
    ``__main__`` (``train.py`` imports torch), which costs seconds per worker.
    """
    total: Counter[str] = Counter()
    if num_workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            total.update(func(job))
        return total
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(min(num_workers, len(jobs))) as pool:
        for counts in pool.imap_unordered(func, jobs):
            total.update(counts)
    return total


def default_workers() -> int:
    """One worker per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count_source(
    source: str | Path | Iterable[str],
    special_tokens: Sequence[str] = (),
    num_workers: int | None = None,
) -> Counter[str]:
    """Pre-token counts of a training source, computed in parallel when it is large.

    ``source`` is a ``pathlib.Path`` (a UTF-8 file, read in byte ranges by the workers), a ``str``
    (the text itself, never a file name) or an iterable of ``str`` (documents; no pre-token
    spans two documents, as if a special token separated them).
    """
    workers = default_workers() if num_workers is None else num_workers
    if isinstance(source, Path):
        size = source.stat().st_size
        n = workers if size >= PARALLEL_MIN_CHARS else 1
        offsets = file_chunk_offsets(source, n, special_tokens)
        jobs_f = [(source, a, b, special_tokens) for a, b in pairwise(offsets)]
        return _pool_map(_count_file_range, jobs_f, n)
    if isinstance(source, str):
        n = workers if len(source) >= PARALLEL_MIN_CHARS else 1
        chunks = chunk_text(source, n, special_tokens)
        return _pool_map(_count_texts, [([c], special_tokens) for c in chunks], n)
    # Documents: batches of about PARALLEL_MIN_CHARS characters, one job each.
    batches: list[list[str]] = [[]]
    size = 0
    for doc in source:
        if not isinstance(doc, str):
            raise TypeError(f"an iterable source must yield str, got {type(doc).__name__}")
        if size >= PARALLEL_MIN_CHARS:
            batches.append([])
            size = 0
        batches[-1].append(doc)
        size += len(doc)
    jobs_t = [(batch, special_tokens) for batch in batches if batch]
    return _pool_map(_count_texts, jobs_t, workers)

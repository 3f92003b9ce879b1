"""Pre-tokenization: cutting text into the pieces that byte-pair merges may never cross.

BPE is not run on raw text. GPT-2 first cuts text into "pre-tokens" with a regular expression
so that no merge crosses from one character category to another (Radford et al. 2019, §2.2): a
token like ``dog.`` can never be learned, while the leading space stays attached to the word
(`` the``). Special tokens such as ``<|endoftext|>`` are cut out *before* that, so they are never
split or merged (Stanford CS336 assignment 1, §2.4-2.5).

Training only needs how often each pre-token occurs, which is why the corpus is reduced to a
``Counter`` of unique pre-tokens here; that count is computed in parallel over chunks whose
boundaries are guaranteed pre-token boundaries, so the parallel result equals the serial one, and
the chunks are streamed to the workers, so memory holds the counts, never the corpus.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import regex

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.workers import default_workers, document_batches, imap_bounded

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

# What one counting job reads: large enough that a job outweighs handing it to a worker, small
# enough that a few of them in flight are nothing beside the counts.
CHUNK_CHARS = 1 << 20


def special_splitter(special_tokens: Iterable[str]) -> regex.Pattern[str] | None:
    """A regex whose ``split`` keeps special tokens as separate parts (odd indices).

    Longer tokens are tried first, so that when one special token is a prefix of another
    (``<|a|>`` and ``<|a|><|b|>``) the longest match wins, as in HF `tokenizers` (tiktoken leaves
    that choice unspecified, which is why ``compiled.py`` refuses it such tokens).
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


def chunk_text(text: str, size: int, special_tokens: Sequence[str] = ()) -> Iterator[str]:
    """Cut ``text`` into pieces of about ``size`` characters at pre-token boundaries (see module
    doc); a stretch with no boundary stays whole."""
    boundary = _boundary_regex(special_tokens, binary=False)
    start = 0
    while start < len(text):
        match = boundary.search(text, start + size) if start + size < len(text) else None
        # A line boundary is the position after the newline; a special token starts its chunk.
        end = len(text) if match is None else match.start() + (0 if special_tokens else 1)
        yield text[start:end]
        start = end


def file_chunk_offsets(
    path: Path, size: int, special_tokens: Sequence[str] = ()
) -> Iterator[tuple[int, int]]:
    """Byte ranges of about ``size`` bytes that cut a file at pre-token boundaries.

    Only a small window around each guessed offset is read, so the parent process never holds
    the file (the CS336 assignment 1 suggestion for parallel pre-tokenization).
    """
    boundary = _boundary_regex(special_tokens, binary=True)
    total = path.stat().st_size
    window = 1 << 16
    # Read a little past the window so that a boundary straddling its end is still found.
    overlap = max((len(t.encode("utf-8")) for t in special_tokens), default=1) + 1
    start = 0
    with path.open("rb") as f:
        while start < total:
            position, end = start + size, total
            while position < total:
                f.seek(position)
                match = boundary.search(f.read(window + overlap))
                if match is not None and match.start() < window:
                    end = position + match.start() + (0 if special_tokens else 1)
                    break
                position += window
            yield start, end
            start = end


def _count_job(job: tuple[Any, Sequence[str]]) -> Counter[str]:
    """Worker: count the pre-tokens of a batch of texts, or of a byte range of a file."""
    source, special_tokens = job
    if isinstance(source, list):
        counts: Counter[str] = Counter()
        for text in source:
            counts.update(count_pretokens(text, special_tokens))
        return counts
    path, start, end = source
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        return count_pretokens(data.decode("utf-8"), special_tokens)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text near byte {start + e.start}") from None


def corpus_source(
    text: str | None = None, files: Sequence[str | Path] | None = None, documents: Iterable[str] | None = None
) -> str:
    """Check that exactly one of ``text``, ``files``, ``documents`` is given, each of its own
    type; return the name of the one given. A ``str`` is never taken for a file name."""
    given = [
        name
        for name, value in (("text", text), ("files", files), ("documents", documents))
        if value is not None
    ]
    if len(given) != 1:
        raise ArgumentError(
            "text" if not given else given[1],
            "give exactly one source" + (f", not {' and '.join(given)}" if given else ""),
            "text=the text itself, files=[paths of UTF-8 files], or documents=an iterable of str",
        )
    if text is not None and not isinstance(text, str):
        raise ArgumentError(
            "text", f"is a {type(text).__name__}, not the text itself", "for files use files=[path]"
        )
    if text is not None and len(text) < 4096 and os.path.isfile(text):
        raise ArgumentError("text", f"{text!r} is the name of a file, not a text", f"use files=[{text!r}]")
    if files is not None and isinstance(files, str | Path):
        raise ArgumentError(
            "files", f"is one {type(files).__name__}, not a list of paths", f"write [{str(files)!r}]"
        )
    if documents is not None and isinstance(documents, str | bytes):
        raise ArgumentError(
            "documents",
            "is one string (it would be read as one document per character)",
            "use text= or a list",
        )
    return given[0]


def count_corpus(
    *,
    text: str | None = None,
    files: Sequence[str | Path] | None = None,
    documents: Iterable[str] | None = None,
    special_tokens: Sequence[str] = (),
    num_workers: int | None = None,
) -> Counter[str]:
    """Pre-token counts of exactly one source: ``text`` (the text itself), ``files`` (UTF-8 files,
    read in byte ranges by the workers) or ``documents`` (an iterable of str, e.g. a generator; no
    pre-token spans two documents, as if a special token separated them).

    The corpus is cut into jobs of about ``CHUNK_CHARS`` characters, produced lazily and counted by
    ``num_workers`` processes (default: one per CPU) with a few jobs in flight, so memory grows
    with the number of distinct pre-tokens, never with the size of the corpus.
    """
    kind = corpus_source(text, files, documents)
    sources: Iterable[Any]
    if kind == "text":
        assert text is not None
        sources = ([chunk] for chunk in chunk_text(text, CHUNK_CHARS, special_tokens))
    elif kind == "files":
        assert files is not None
        paths = [Path(f) for f in files]
        for path in paths:
            if not path.is_file():
                raise DataError(f"{path}: no such file to train on")
        sources = ((p, a, b) for p in paths for a, b in file_chunk_offsets(p, CHUNK_CHARS, special_tokens))
    else:
        assert documents is not None
        sources = document_batches(documents, CHUNK_CHARS, "documents")
    workers = default_workers() if num_workers is None else num_workers
    total: Counter[str] = Counter()
    for counts in imap_bounded(_count_job, ((s, tuple(special_tokens)) for s in sources), workers):
        total.update(counts)
    return total

"""Prepare once, reuse: a corpus encoded to sharded token files, cached and memory-mapped.

Training a language model reads the same ids every epoch and every run, so the corpus is encoded
once (nanoGPT's ``prepare.py`` writes ``train.bin``/``val.bin``; CS336 assignment 1 §2.7 encodes
to a ``uint16`` array the same way) and the files are memory-mapped from then on. Here:

- ``prepare(train, val, tokenizer, fingerprint=…, cache_dir=…)`` encodes two iterables of
  documents with ``<|endoftext|>`` after each, in ``num_proc`` worker processes, by the fastest
  encoder that reproduces the tokenizer's ids (``llm_lab.tokenizers.compiled``), into shards of
  ``uint16`` ids (``uint32`` when the vocabulary does not fit) plus ``index.json``.
- The directory is ``cache_dir/<key>``, the key a hash of the corpus fingerprint, the tokenizer's
  hash, the split settings and ``max_tokens``: change any of them and the corpus is prepared again.
- Memory is bounded whatever the corpus size: documents are read lazily in batches of about
  ``batch_chars`` characters, a few batches in flight, and ids go straight to the shard files.
- A document longer than ``batch_chars`` (text8, a dump in one file: the common case) is cut into
  pieces at pre-token boundaries (``llm_lab.tokenizers.pretokenize.chunk_text``: no pre-token and
  so no merge crosses them), which the processes encode in parallel; the pieces' ids, joined, are
  the ids of the whole document. Only the lab's byte-level BPE is cut (its GPT-2 pre-tokenizer is
  the one whose boundaries are known); other tokenizers encode each document whole.
- Crash safety: shards are written under temporary names and renamed when complete, and the index
  is written last. A file lock (:mod:`llm_lab.locks`) makes concurrent processes (DDP ranks, two
  runs at once) prepare once; the others wait and reuse the result.
- Integrity: the index records each file's size, its xxh3 checksum (computed from the bytes as they
  are written: xxh3 hashes at memory speed, ~20 GB/s) and each shard's largest id, and names files
  of its own folder only. Opening checks all of it: a same-size shard of other bytes, an id outside
  the vocabulary, an index naming ``/etc/passwd`` or ``../x`` are found before any id is read. A
  reused directory that fails is moved aside (``<key>.damaged``) with one warning line naming it,
  and prepared again; one that a killed run left without its index is just removed. A read-only
  cache that holds a good entry is read without writing anything.
- ``PreparedCorpus.open(directory)`` maps the shards: ``.train`` and ``.val`` index like one array
  (what a windows dataset slices), ``document_ends()`` gives the document boundaries.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import xxhash

from llm_lab.data.windows import id_dtype
from llm_lab.errors import ArgumentError, DataError
from llm_lab.locks import exclusive
from llm_lab.tokenizers.base import Tokenizer, tokenizer_hash
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.compiled import ENCODERS, BatchEncoder
from llm_lab.tokenizers.pretokenize import chunk_text
from llm_lab.tokenizers.simple import ENDOFTEXT
from llm_lab.tokenizers.workers import imap_bounded

FORMAT_VERSION = 2  # 2: checksums and largest ids in the index
INDEX = "index.json"
SPLITS = ("train", "val")
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ reading
class TokenShards:
    """One split's ids: its shards, memory-mapped, indexed as if they were one 1-D array.

    ``ids[a:b]`` returns a numpy array (copied across a shard boundary), ``len(ids)`` the number
    of ids, which is all :class:`~llm_lab.data.windows.TokenWindows` asks of its ids.
    """

    def __init__(self, shards: Sequence[np.ndarray], document_ends: np.ndarray) -> None:
        self.shards = list(shards)
        self._starts = np.cumsum([0] + [len(s) for s in self.shards]).tolist()
        self._document_ends = document_ends
        self.dtype = self.shards[0].dtype if self.shards else np.dtype(np.uint16)

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ArgumentError(
                    "index", f"step {step}: token shards are sliced contiguously", "use step 1"
                )
            return self._read(start, max(start, stop))
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"token {index} of {len(self)}")
        shard = bisect.bisect_right(self._starts, i) - 1
        return self.shards[shard][i - self._starts[shard]]

    def _read(self, start: int, stop: int) -> np.ndarray:
        first = bisect.bisect_right(self._starts, start) - 1
        pieces = []
        while start < stop:
            offset = self._starts[first]
            piece = self.shards[first][start - offset : stop - offset]
            pieces.append(piece)
            start += len(piece)
            first += 1
        if len(pieces) == 1:
            return np.asarray(pieces[0])
        return np.concatenate(pieces) if pieces else np.empty(0, self.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All ids in one in-memory array (``np.asarray(shards)``)."""
        whole = self._read(0, len(self))
        return whole if dtype is None else whole.astype(dtype)

    def document_ends(self) -> np.ndarray:
        """The position after each document's last id (its ``<|endoftext|>``), in order."""
        return self._document_ends


class PreparedCorpus:
    """A prepared directory: its index, and the train and val ids memory-mapped."""

    def __init__(self, directory: Path, index: dict[str, Any]) -> None:
        self.directory = directory
        self.index = index
        self.dtype = np.dtype(index["dtype"])
        self.eot_id: int = index["eot_id"]
        splits = {name: self._map(index["splits"][name]) for name in SPLITS}
        self.train, self.val = splits["train"], splits["val"]

    def _map(self, split: dict[str, Any]) -> TokenShards:
        shards = [np.memmap(self.directory / s["file"], dtype=self.dtype, mode="r") for s in split["shards"]]
        ends_file = self.directory / split["document_ends"]["file"]
        ends = np.memmap(ends_file, dtype=np.int64, mode="r") if split["documents"] else np.empty(0, np.int64)
        return TokenShards(shards, ends)

    @classmethod
    def open(cls, directory: str | Path) -> PreparedCorpus:
        """Map a prepared directory; one without a valid, complete index, or whose files do not
        match it (:func:`read_index`), is a :class:`DataError`."""
        directory = Path(directory)
        index, problem = read_index(directory)
        if index is None:
            raise DataError(f"{directory}: not a prepared corpus ({problem}); prepare it again")
        return cls(directory, index)


def checksum(path: Path) -> str:
    """The xxh3 checksum of a file's bytes, read in pieces (a shard may be larger than memory)."""
    digest = xxhash.xxh3_64()
    with path.open("rb") as f:
        while piece := f.read(1 << 24):
            digest.update(piece)
    return digest.hexdigest()


def _file_problem(directory: Path, entry: dict[str, Any], size: int) -> str | None:
    """What is wrong with one file of the index: a name outside ``directory``, or a size or
    checksum other than the index's."""
    name = entry["file"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        return f"the index names {name!r}, not a file of its own folder"
    actual = (directory / name).stat().st_size
    if actual != size:
        return f"{name} holds {actual} bytes, the index says {size}"
    if checksum(directory / name) != entry["xxh3"]:
        return f"{name} does not hold the bytes that were written (checksum mismatch)"
    return None


def read_index(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The directory's index if it is complete and every file it names is in the directory, with
    the size and checksum it says, and every id below the vocabulary size; else ``None`` and what
    is wrong."""
    try:
        index = json.loads((directory / INDEX).read_text(encoding="utf-8"))
        if index.get("format") != FORMAT_VERSION:
            return None, f"format {index.get('format')!r}, not {FORMAT_VERSION}"
        itemsize = np.dtype(index["dtype"]).itemsize
        for name in SPLITS:
            split = index["splits"][name]
            files = [(s, s["tokens"] * itemsize) for s in split["shards"]]
            files.append((split["document_ends"], split["documents"] * 8))
            for entry, size in files:
                problem = _file_problem(directory, entry, size)
                if problem is not None:
                    return None, problem
            if sum(s["tokens"] for s in split["shards"]) != split["tokens"]:
                return None, f"the {name} shards do not add up to {split['tokens']} tokens"
            for shard in split["shards"]:
                if shard["tokens"] and not 0 <= shard["max_id"] < index["vocab_size"]:
                    return None, f"{shard['file']} holds id {shard['max_id']}, outside its vocabulary"
    except FileNotFoundError as e:
        return None, f"{Path(e.filename).name} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"unreadable index ({e!r})"
    return index, ""


# ------------------------------------------------------------------------------------ writing
class _ShardWriter:
    """Appends ids to ``<split>-00000.bin``, ``-00001.bin``… of ``shard_tokens`` ids each, every
    file written under a temporary name, flushed to disk, then renamed; document ends likewise."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.tokens = self.documents = 0
        self._file: _AtomicFile | None = None
        self._in_shard = self._max_id = 0
        self._ends = _AtomicFile(directory / f"{split}-documents.bin")

    def write(self, ids: np.ndarray, ends: np.ndarray) -> None:
        """Append ``ids``; ``ends`` are the positions in ``ids`` after each document that ends
        there (a document may have begun in an earlier call)."""
        self._ends.write(np.asarray(ends, dtype=np.int64) + self.tokens)
        self.tokens += len(ids)
        self.documents += len(ends)
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            if self._file is None:
                self._file = _AtomicFile(self.directory / f"{self.split}-{len(self.shards):05d}.bin")
            room = self.shard_tokens - self._in_shard
            piece = ids[:room]
            self._file.write(piece)
            self._max_id = max(self._max_id, int(piece.max()))
            self._in_shard += len(piece)
            ids = ids[room:]
            if self._in_shard == self.shard_tokens:
                self._close_shard()

    def _close_shard(self) -> None:
        assert self._file is not None
        entry = self._file.commit() | {"tokens": self._in_shard, "max_id": self._max_id}
        self.shards.append(entry)
        self._file, self._in_shard, self._max_id = None, 0, 0

    def close(self) -> dict[str, Any]:
        """Commit the last shard and the document ends; the split's entry of the index."""
        if self._file is not None:
            self._close_shard()
        return {
            "tokens": self.tokens,
            "documents": self.documents,
            "shards": self.shards,
            "document_ends": self._ends.commit(),
        }


class _AtomicFile:
    """A file written as ``.<name>.tmp`` and renamed to ``name`` once flushed to disk; its checksum
    is computed from the bytes as they are written (no second read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp")
        self.file: BinaryIO = self._tmp.open("wb")
        self._digest = xxhash.xxh3_64()

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).data
        self._digest.update(data)
        self.file.write(data)

    def commit(self) -> dict[str, str]:
        """Flush, rename; the index's entry of the file (its name and checksum)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self._tmp, self.path)
        return {"file": self.path.name, "xxh3": self._digest.hexdigest()}


def _write_index(directory: Path, index: dict[str, Any]) -> None:
    tmp = directory / f".{INDEX}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(index, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / INDEX)
    descriptor = os.open(directory, os.O_RDONLY)  # make the renames themselves durable
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------- encoding
_worker: tuple[BatchEncoder, int, np.dtype] | None = None


def _start_worker(encoder: BatchEncoder, eot_id: int, dtype: np.dtype) -> None:
    global _worker
    _worker = (encoder, eot_id, dtype)


Piece = tuple[str, bool]  # a document's text, or a part of it; True for its last part


def _pieces(docs: Iterable[str], size: int, cut: bool, name: str) -> Iterator[Piece]:
    """Each document as ``(text, is_last)`` pieces: whole, or, when ``cut``, pieces of about
    ``size`` characters cut at pre-token boundaries (a stretch without one stays whole)."""
    for doc in docs:
        if not isinstance(doc, str):
            raise ArgumentError(name, f"yields a {type(doc).__name__}, not str", "give documents as text")
        if not cut or len(doc) <= size:
            yield doc, True
            continue
        pieces = chunk_text(doc, size)
        piece = next(pieces)
        for following in pieces:
            yield piece, False
            piece = following
        yield piece, True


def _piece_batches(pieces: Iterable[Piece], size: int) -> Iterator[list[Piece]]:
    """Consecutive pieces in lists of about ``size`` characters: the jobs of the workers."""
    batch: list[Piece] = []
    chars = 0
    for piece in pieces:
        batch.append(piece)
        chars += len(piece[0])
        if chars >= size:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _encode_batch(pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray, int]:
    """Worker: the batch's ids (already in the shard dtype: half the bytes to send back for
    uint16) with ``<|endoftext|>`` after each document's last piece, the positions in them where
    documents end, and the batch's size in UTF-8 bytes."""
    assert _worker is not None, "_start_worker runs first in every worker"
    encoder, eot_id, dtype = _worker
    texts = [text for text, _ in pieces]
    last = np.array([is_last for _, is_last in pieces], dtype=bool)
    ids, lengths = encoder.encode_documents(texts, eot_id)
    if not last.all():  # a piece that does not end its document takes no end-of-text
        ids = np.delete(ids, (np.cumsum(lengths) - 1)[~last])
        lengths = lengths - ~last
    n_bytes = sum(len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts)  # isascii: O(1)
    return ids.astype(dtype), np.cumsum(lengths)[last], n_bytes


class _Progress:
    """MB/s, ids and an ETA (when the size is known): a tqdm bar on a terminal, else a line
    every ``every`` seconds and one at the end."""

    def __init__(
        self, label: str, total_bytes: int | None, show: bool, stream: TextIO, every: float = 10.0
    ) -> None:
        self.label, self.total, self.stream, self.every = label, total_bytes, stream, every
        self.show = show
        self.bytes = self.tokens = 0
        self.start = self._last = time.perf_counter()
        self._bar: Any = None
        if show and stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, desc=label, unit="B", unit_scale=True, file=stream)

    def update(self, n_bytes: int, n_tokens: int) -> None:
        self.bytes += n_bytes
        self.tokens += n_tokens
        if self._bar is not None:
            self._bar.update(n_bytes)
            self._bar.set_postfix(tokens=f"{self.tokens:,}", refresh=False)
        elif self.show and time.perf_counter() - self._last >= self.every:
            self._line()

    def _line(self) -> None:
        self._last = time.perf_counter()
        seconds = max(self._last - self.start, 1e-9)
        line = f"prepare {self.label}: {self.bytes / 1e6:.1f} MB, {self.bytes / 1e6 / seconds:.1f} MB/s"
        line += f", {self.tokens:,} tokens"
        if self.total and self.bytes:
            line += f", ETA {seconds * max(self.total / self.bytes - 1, 0):.0f} s"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.show:
            self._line()


def _utf8_size(docs: Iterable[str]) -> int | None:
    """The size of a corpus held in a list (known before reading it); ``None`` for a stream."""
    if isinstance(docs, Sequence) and not isinstance(docs, str):
        return sum(len(d.encode("utf-8")) for d in docs if isinstance(d, str))
    return None


def _encode_split(
    docs: Iterable[str],
    writer: _ShardWriter,
    encoder: BatchEncoder,
    eot_id: int,
    num_proc: int,
    batch_chars: int,
    max_tokens: int | None,
    progress: _Progress,
) -> bool:
    """Encode ``docs`` into ``writer``; True when ``max_tokens`` cut the split short."""
    tok = encoder.tokenizer
    # A special token with a newline could straddle a line boundary: such a tokenizer is not cut.
    cut = isinstance(tok, BPETokenizer) and not any("\n" in t for t in tok.special_tokens)
    batches = _piece_batches(_pieces(docs, batch_chars, cut, writer.split), batch_chars)
    jobs = imap_bounded(
        _encode_batch, batches, num_proc, initializer=_start_worker, initargs=(encoder, eot_id, writer.dtype)
    )
    with closing(jobs):  # leaving early (max_tokens) stops the workers at once
        for ids, ends, n_bytes in jobs:
            if max_tokens is not None and writer.tokens + len(ids) >= max_tokens:
                room = max_tokens - writer.tokens
                # The documents that end before the cap, and the one the cap cuts, ending there.
                writer.write(ids[:room], np.append(ends[ends < room], room))
                progress.update(n_bytes, room)
                return True
            writer.write(ids, ends)
            progress.update(n_bytes, len(ids))
    return False


def cache_key(fingerprint: str, tokenizer: str, split: Mapping[str, Any], max_tokens: int | None) -> str:
    """The name of a prepared corpus's directory: a hash of everything that decides its ids."""
    settings = {"format": FORMAT_VERSION, "corpus": fingerprint, "tokenizer": tokenizer}
    settings |= {"split": dict(split), "max_tokens": max_tokens}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def prepare(
    train: Iterable[str],
    val: Iterable[str],
    tokenizer: Tokenizer,
    *,
    fingerprint: str,
    cache_dir: str | Path,
    split: Mapping[str, Any] | None = None,
    num_proc: int = 1,
    encoder: str = "auto",
    max_tokens: int | None = None,
    shard_tokens: int = 1 << 28,
    batch_chars: int = 1 << 20,
    total_bytes: int | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> PreparedCorpus:
    """Encode the ``train`` and ``val`` documents once, under ``cache_dir``; reuse them after.

    ``fingerprint`` names the corpus (its source and content) and ``split`` the settings that
    split it (seed, validation fraction): with the tokenizer's hash and ``max_tokens`` they decide
    the directory, so any change prepares again. ``max_tokens`` stops the train split after that
    many ids; ``num_proc`` worker processes encode with ``encoder`` ("auto": the fastest that
    reproduces the tokenizer's ids; "lab": the tokenizer's own ``encode``). ``total_bytes`` (the
    train split's UTF-8 size) gives an ETA for a stream; a list's size is measured. Progress goes
    to ``stream`` (standard error by default).
    """
    stream = stream if stream is not None else sys.stderr
    eot_id = tokenizer.token_to_id(ENDOFTEXT)
    if eot_id is None:
        raise ArgumentError(
            "tokenizer", f"has no {ENDOFTEXT} token", f"give it the special token {ENDOFTEXT}"
        )
    for name, value in (("num_proc", num_proc), ("shard_tokens", shard_tokens), ("batch_chars", batch_chars)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(name, f"{value!r} is not a positive integer", "use 1 or more")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ArgumentError("max_tokens", f"{max_tokens!r} is not a positive integer", "or None for no cap")
    if encoder not in ENCODERS:
        raise ArgumentError("encoder", f"unknown encoder {encoder!r}", f"use one of {ENCODERS}")
    token_hash = tokenizer_hash(tokenizer)
    split = dict(split or {})
    directory = Path(cache_dir) / cache_key(fingerprint, token_hash, split, max_tokens)
    found, _ = read_index(directory)
    if found is not None and found["vocab_size"] == tokenizer.vocab_size:
        return PreparedCorpus(directory, found)  # nothing written: a read-only cache serves too
    directory.parent.mkdir(parents=True, exist_ok=True)
    waiting = f"waiting for another process preparing {directory}"
    with exclusive(directory.with_suffix(".lock"), on_wait=lambda: print(waiting, file=stream, flush=True)):
        found, problem = read_index(directory)
        if found is not None and found["vocab_size"] == tokenizer.vocab_size:
            return PreparedCorpus(directory, found)  # another process prepared it while we waited
        batch_encoder = BatchEncoder(tokenizer, encoder)  # checked here: reuse needs no encoder
        set_aside(directory, problem if found is None else "made for another vocabulary size")
        directory.mkdir()
        dtype = np.dtype(id_dtype(tokenizer.vocab_size))
        index: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "corpus": fingerprint,
            "tokenizer": token_hash,
            "split": split,
            "max_tokens": max_tokens,
            "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": eot_id,
            "encoder": batch_encoder.name,
            "splits": {},
        }
        for name, docs in (("train", train), ("val", val)):
            writer = _ShardWriter(directory, name, dtype, shard_tokens)
            size = total_bytes if name == "train" and total_bytes is not None else _utf8_size(docs)
            shown = _Progress(name, size, progress, stream)
            cap = max_tokens if name == "train" else None
            truncated = _encode_split(docs, writer, batch_encoder, eot_id, num_proc, batch_chars, cap, shown)
            shown.close()
            index["splits"][name] = writer.close() | {"truncated": truncated}
        _write_index(directory, index)
    return PreparedCorpus(directory, index)


def set_aside(directory: Path, problem: str) -> None:
    """Clear the way for preparing ``directory`` again. What a killed run left (no index yet) is
    removed; a complete entry that fails its checks is moved to ``<key>.damaged`` (replacing an
    older one there), to look at, with one warning line: it is never trusted, and never fails
    the runs after it."""
    if not (directory / INDEX).exists():
        shutil.rmtree(directory, ignore_errors=True)
        return
    aside = directory.with_name(f"{directory.name}.damaged")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(directory, aside)
    log.warning(f"prepared corpus {directory} is damaged ({problem}): moved to {aside}, preparing it again")

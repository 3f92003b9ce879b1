"""Pre-token counting: parallel equals serial, chunks cut at pre-token boundaries, memory bounded."""

from __future__ import annotations

import random
import signal
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_lab.tokenizers import pretokenize
from llm_lab.tokenizers.pretokenize import chunk_text, count_corpus, count_pretokens, file_chunk_offsets
from llm_lab.tokenizers.workers import imap_bounded, start_method

EOT = "<|endoftext|>"


def noisy_text(seed: int, n: int) -> str:
    rng = random.Random(seed)
    parts = ["the", " cat", "  ", "\n", "\n\n", " 42", "é", "!", "\t", EOT, "'s", "\nX", "\n "]
    return "".join(rng.choice(parts) for _ in range(n))


@settings(max_examples=80, deadline=None)
@given(
    parts=st.lists(st.sampled_from(["a", " ", "\n", "\t", "é", "1", "'s", EOT, "<|", "\n!"]), max_size=40),
    size=st.integers(1, 30),
    specials=st.booleans(),
)
def test_chunks_are_cut_at_pre_token_boundaries(parts, size, specials):
    text = "".join(parts)
    special_tokens = [EOT] if specials else []
    chunks = list(chunk_text(text, size, special_tokens))
    total: Counter[str] = Counter()
    for chunk in chunks:
        total.update(count_pretokens(chunk, special_tokens))
    assert "".join(chunks) == text and all(chunks)
    assert total == count_pretokens(text, special_tokens)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(1, 200), specials=st.booleans())
def test_file_ranges_are_cut_at_pre_token_boundaries(tmp_path_factory, seed, size, specials):
    text = noisy_text(seed, 300)
    path = tmp_path_factory.mktemp("ranges") / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    special_tokens = [EOT] if specials else []
    data = path.read_bytes()
    ranges = list(file_chunk_offsets(path, size, special_tokens))
    assert [a for a, _ in ranges[1:]] == [b for _, b in ranges[:-1]] and ranges[-1][1] == len(data)
    total: Counter[str] = Counter()
    for a, b in ranges:
        total.update(count_pretokens(data[a:b].decode("utf-8"), special_tokens))
    assert total == count_pretokens(text, special_tokens)


@pytest.mark.parametrize("specials", [[EOT], []])
def test_parallel_counting_equals_serial_for_every_source(tmp_path: Path, monkeypatch, specials):
    monkeypatch.setattr(pretokenize, "CHUNK_CHARS", 2000)
    text = noisy_text(0, 20_000)
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    serial = count_pretokens(text, specials)
    assert len(list(chunk_text(text, 2000, specials))) > 10  # really cut into many jobs
    assert count_corpus(text=text, special_tokens=specials, num_workers=2) == serial
    assert count_corpus(files=[path, path], special_tokens=specials, num_workers=2) == serial + serial
    docs = text.split(EOT)
    by_document = sum((count_pretokens(d, specials) for d in docs), Counter())
    assert count_corpus(documents=iter(docs), special_tokens=specials, num_workers=2) == by_document


def test_workers_never_hold_more_than_in_flight_jobs():
    produced, consumed, ahead = 0, 0, []

    def jobs() -> Iterator[int]:
        nonlocal produced
        for i in range(40):
            produced += 1
            ahead.append(produced - consumed)
            yield i

    results = []
    for result in imap_bounded(abs, jobs(), num_workers=2, in_flight=3):
        results.append(result)
        consumed += 1
    assert results == list(range(40))  # in order
    assert max(ahead) == 3  # a job is drawn only when fewer than 3 are pending


def test_counting_a_stream_of_documents_holds_the_counts_not_the_corpus(monkeypatch):
    """The parent's peak memory hardly grows from a corpus of 0.4 MB to one of 4.2 MB (same words)."""
    monkeypatch.setattr(pretokenize, "CHUNK_CHARS", 1 << 15)
    letters = random.Random(1)
    words = ["".join(letters.choices("abcdefghij", k=6)) for _ in range(2000)]

    def documents(n: int) -> Iterator[str]:
        rng = random.Random(0)
        for _ in range(n):
            yield " ".join(rng.choices(words, k=200))

    def parent_peak(n: int) -> int:
        tracemalloc.start()
        counts = count_corpus(documents=documents(n), num_workers=2)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert sum(counts.values()) == 200 * n
        return peak

    small, large = parent_peak(300), parent_peak(3000)  # about 0.4 MB and 4.2 MB of text
    # Holding the corpus would add its 3.8 MB; what is in flight varies by a few jobs' counts.
    assert large - small < 1.5e6 and large < 4e6, (small, large)


def test_workers_take_sigterm_by_default_whatever_handler_their_parent_has():
    """train.py installs a Python SIGTERM handler, which forked workers would inherit: the pool's
    terminate (SIGTERM to each worker) must end them, handler or not."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        dispositions = list(imap_bounded(signal.getsignal, [signal.SIGTERM] * 4, 2))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert dispositions == [signal.SIG_DFL] * 4


def test_workers_start_from_a_fork_server_when_other_threads_run():
    """A fork with another thread alive can copy a held lock into the child; then the workers
    come from a fresh one-thread server, and still give the same results."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert start_method() == "forkserver"
        assert list(imap_bounded(abs, range(-20, 0), num_workers=2)) == list(range(20, 0, -1))
    finally:
        stop.set()
        other.join()

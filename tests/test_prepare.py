"""Prepared corpora: the ids of the tokenizer, prepared once, reused, never trusted when half-written."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import xxhash
from conftest import ROOT

from llm_lab.data.prepare import PreparedCorpus, prepare
from llm_lab.data.windows import TokenWindows
from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers import FastBPETokenizer, SimpleTokenizer, Vocabulary
from llm_lab.tokenizers.simple import ENDOFTEXT, UNK

EOT = ENDOFTEXT


def builtin_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


@cache
def tokenizer() -> FastBPETokenizer:
    return FastBPETokenizer.train(800, documents=builtin_docs(), special_tokens=[EOT])


TRAIN, VAL = builtin_docs()[:60], builtin_docs()[60:]  # 79 documents, about 0.6 MB


def expected_ids(docs: list[str], tok=None) -> list[int]:
    tok = tok or tokenizer()
    eot = tok.token_to_id(EOT)
    return [i for doc in docs for i in (*tok.encode(doc), eot)]


def counted(docs: list[str], seen: list[int]) -> Iterator[str]:
    """``docs`` as a stream that records how many were read."""
    for doc in docs:
        seen.append(1)
        yield doc


def never_read() -> Iterator[str]:
    raise AssertionError("the corpus was read again")
    yield ""  # pragma: no cover - makes this a generator


def prep(cache_dir: Path, train=TRAIN, val=VAL, tok=None, **kwargs) -> PreparedCorpus:
    kwargs = {"fingerprint": "builtin", "progress": False} | kwargs
    return prepare(train, val, tok or tokenizer(), cache_dir=cache_dir, **kwargs)


# -------------------------------------------------------------------------------- the ids
@pytest.mark.parametrize(("encoder", "num_proc"), [("lab", 1), ("tiktoken", 1), ("hf", 1), ("auto", 2)])
def test_prepared_ids_are_the_tokenizers_ids_with_end_of_text_after_each_document(
    tmp_path, encoder, num_proc
):
    corpus = prep(tmp_path, encoder=encoder, num_proc=num_proc, batch_chars=20_000, shard_tokens=30_000)
    assert np.asarray(corpus.train).tolist() == expected_ids(TRAIN)
    assert np.asarray(corpus.val).tolist() == expected_ids(VAL)
    assert len(corpus.train.shards) > 3 and corpus.train.dtype == np.uint16
    lengths = [len(tokenizer().encode(d)) + 1 for d in TRAIN]
    assert corpus.train.document_ends().tolist() == np.cumsum(lengths).tolist()
    index = json.loads((corpus.directory / "index.json").read_text())
    assert index["splits"]["train"]["documents"] == len(TRAIN) and index["eot_id"] == tokenizer().token_to_id(
        EOT
    )
    assert index["encoder"] == ("tiktoken" if encoder == "auto" else encoder)


def test_shards_slice_like_one_array_for_token_windows(tmp_path):
    corpus = prep(tmp_path, shard_tokens=1000)
    whole = np.asarray(corpus.train)
    assert len(corpus.train.shards) > 10
    rng = random.Random(0)
    for _ in range(200):
        a = rng.randrange(len(whole))
        b = rng.randrange(a, min(len(whole), a + 2500) + 1)
        assert np.array_equal(corpus.train[a:b], whole[a:b])
    assert (
        corpus.train[-1] == whole[-1]
        and corpus.train[999] == whole[999]
        and corpus.train[1000] == whole[1000]
    )
    on_shards, in_memory = TokenWindows(corpus.train, 64), TokenWindows(whole, 64)
    assert len(on_shards) == len(in_memory)
    for i in (0, 15, len(in_memory) - 1):
        assert all(np.array_equal(x, y) for x, y in zip(on_shards[i], in_memory[i], strict=True))


@pytest.mark.parametrize(("size", "dtype"), [(2**16, np.uint16), (2**16 + 1, np.uint32)])
def test_ids_are_uint16_exactly_when_the_vocabulary_fits(tmp_path, size, dtype):
    words = [f"w{i}" for i in range(size - 2)]
    tok = SimpleTokenizer(Vocabulary([*words, UNK, EOT]))
    text = f"w0 {words[-1]} nope w1"
    corpus = prep(tmp_path, [text], [text], tok=tok)
    assert corpus.train.dtype == dtype and corpus.dtype == dtype
    assert np.asarray(corpus.train).tolist() == [0, size - 3, size - 2, 1, size - 1]


def test_max_tokens_stops_the_train_split_there(tmp_path):
    seen: list[int] = []
    corpus = prep(tmp_path, counted(TRAIN, seen), VAL, max_tokens=5000, batch_chars=2000)
    assert len(corpus.train) == 5000 and np.asarray(corpus.train).tolist() == expected_ids(TRAIN)[:5000]
    assert corpus.train.document_ends()[-1] == 5000
    assert len(seen) < len(TRAIN) / 2  # stopped reading, not just cut
    assert np.asarray(corpus.val).tolist() == expected_ids(VAL)
    assert corpus.index["splits"]["train"]["truncated"]


# ----------------------------------------------------------------------------- the cache
def test_a_second_call_reuses_the_prepared_files_without_reading_the_corpus(tmp_path):
    first = prep(tmp_path)
    stamp = (first.directory / "index.json").stat().st_mtime_ns
    again = prep(tmp_path, never_read(), never_read(), num_proc=2, encoder="lab")  # the encoder changes no id
    assert again.directory == first.directory and (again.directory / "index.json").stat().st_mtime_ns == stamp
    assert np.asarray(again.train).tolist() == expected_ids(TRAIN)


@pytest.mark.parametrize(
    "change",
    [
        {"fingerprint": "another corpus"},
        {"split": {"seed": 1, "val_fraction": 0.1}},
        {"max_tokens": 10_000},
        {"tok": "retrained"},
    ],
)
def test_a_new_corpus_split_cap_or_tokenizer_prepares_again(tmp_path, change):
    first = prep(tmp_path)
    if change.get("tok") == "retrained":
        change = {"tok": FastBPETokenizer.train(600, documents=builtin_docs(), special_tokens=[EOT])}
    seen: list[int] = []
    second = prep(tmp_path, counted(TRAIN, seen), VAL, **change)
    assert second.directory != first.directory and len(seen) > 0
    assert (
        np.asarray(second.train).tolist()
        == expected_ids(TRAIN, change.get("tok"))[: change.get("max_tokens")]
    )


@pytest.mark.parametrize("damage", ["no index", "short shard", "missing shard", "bad index", "old format"])
def test_a_damaged_directory_is_never_trusted_but_prepared_again(tmp_path, damage):
    directory = prep(tmp_path, shard_tokens=20_000).directory
    shard = directory / "train-00001.bin"
    if damage == "no index":
        (directory / "index.json").unlink()
    elif damage == "short shard":
        shard.write_bytes(shard.read_bytes()[:-2])
    elif damage == "missing shard":
        shard.unlink()
    elif damage == "bad index":
        (directory / "index.json").write_text('{"format": 1, "splits": ')
    else:
        index = json.loads((directory / "index.json").read_text())
        (directory / "index.json").write_text(json.dumps(index | {"format": 0}))
    with pytest.raises(DataError, match=re.escape(str(directory))):
        PreparedCorpus.open(directory)
    (directory / ".train-00009.bin.tmp").write_bytes(b"half written")
    seen: list[int] = []
    again = prep(tmp_path, counted(TRAIN, seen), VAL, shard_tokens=20_000)
    assert again.directory == directory and len(seen) == len(TRAIN)
    assert np.asarray(again.train).tolist() == expected_ids(TRAIN)
    assert not list(directory.glob(".*.tmp"))


def _rewrite_index(directory: Path, change) -> None:
    index = json.loads((directory / "index.json").read_text())
    change(index)
    (directory / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("damage", ["same-size garbage", "ids outside the vocabulary", "absolute path"])
def test_a_shard_that_is_not_what_was_written_is_moved_aside_and_rebuilt(tmp_path, damage, caplog):
    cache_dir, outside = tmp_path / "cache", tmp_path / "outside.bin"
    directory = prep(cache_dir, shard_tokens=20_000).directory
    shard = directory / "train-00001.bin"
    written = shard.read_bytes()
    if damage == "same-size garbage":  # right size, other ids: only the checksum can tell
        shard.write_bytes(np.random.default_rng(0).integers(0, 800, len(written) // 2, np.uint16).tobytes())
    elif damage == "ids outside the vocabulary":  # index rewritten to match, as a careless tool would
        shard.write_bytes(np.full(len(written) // 2, 65_000, np.uint16).tobytes())

        def claim_the_new_bytes(index):
            entry = index["splits"]["train"]["shards"][1]
            entry["xxh3"], entry["max_id"] = xxhash.xxh3_64(shard.read_bytes()).hexdigest(), 65_000

        _rewrite_index(directory, claim_the_new_bytes)
    else:  # an index that names a file outside the cache, with its true size and checksum
        outside.write_bytes(written)

        def point_outside(index):
            index["splits"]["train"]["shards"][1]["file"] = str(outside)

        _rewrite_index(directory, point_outside)
    with pytest.raises(DataError, match=re.escape(str(directory))):
        PreparedCorpus.open(directory)
    seen: list[int] = []
    with caplog.at_level("WARNING"):
        again = prep(cache_dir, counted(TRAIN, seen), VAL, shard_tokens=20_000)
    assert again.directory == directory and len(seen) == len(TRAIN)  # rebuilt once
    assert shard.read_bytes() == written and np.asarray(again.train).tolist() == expected_ids(TRAIN)
    aside = directory.with_name(f"{directory.name}.damaged")
    assert aside.is_dir() and [r for r in caplog.records if str(directory) in r.getMessage()]
    if damage == "absolute path":
        assert outside.read_bytes() == written  # never mapped nor touched
    assert prep(cache_dir, never_read(), never_read(), shard_tokens=20_000).directory == directory


def test_a_read_only_cache_with_a_good_entry_is_used_without_writing(tmp_path):
    directory = prep(tmp_path, shard_tokens=20_000).directory
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    for path in [tmp_path, *before]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        again = prep(tmp_path, never_read(), never_read(), shard_tokens=20_000)
    finally:
        for path in [tmp_path, *before]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert again.directory == directory and np.asarray(again.val).tolist() == expected_ids(VAL)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing new, nothing changed


# A script run as separate processes: prepares the built-in corpus, slowly, with a marker file
# when it reads the corpus, and can wait for a partner or stop (to be killed) partway.
SCRIPT = r"""
import hashlib, os, sys, time
from pathlib import Path
import numpy as np
from llm_lab.data.prepare import prepare
from llm_lab.tokenizers import FastBPETokenizer
from pydoc_data.topics import topics

tokenizer, cache_dir, marks, mode = sys.argv[1:5]
marks = Path(marks)
docs = [topics[k] for k in sorted(topics)]

def train():
    (marks / f"read-{os.getpid()}").touch()
    for i, doc in enumerate(docs[:60]):
        if mode == "hang" and i == 40:
            (marks / "hanging").touch()
            time.sleep(600)
        time.sleep(0.005)
        yield doc

(marks / f"ready-{os.getpid()}").touch()
while mode == "race" and len(list(marks.glob("ready-*"))) < 2:
    time.sleep(0.01)
corpus = prepare(train(), docs[60:], FastBPETokenizer.load(tokenizer), fingerprint="builtin",
                 cache_dir=cache_dir, num_proc=2, batch_chars=5000, shard_tokens=20_000)
print(hashlib.sha256(np.asarray(corpus.train).tobytes()).hexdigest())
"""


def start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    tok_file = tokenizer().save(tmp_path / "tokenizer.json")
    cmd = [sys.executable, "-c", SCRIPT, str(tok_file), str(tmp_path / "cache"), str(marks), mode]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_started_at_once_prepare_once(tmp_path):
    first, second = start(tmp_path, "race"), start(tmp_path, "race")
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    readers = list((tmp_path / "marks").glob("read-*"))
    assert len(readers) == 1  # one process encoded, the other waited and reused
    assert sum("waiting for another process" in err for _, err in outputs) == 1
    expected = prep(tmp_path / "cache", never_read(), never_read(), num_proc=2, encoder="lab")
    hashes = {out.strip() for out, _ in outputs}
    import hashlib

    assert hashes == {hashlib.sha256(np.asarray(expected.train).tobytes()).hexdigest()}


def test_a_preparation_killed_midway_is_prepared_again_cleanly(tmp_path):
    victim = start(tmp_path, "hang")
    deadline = time.monotonic() + 120
    while not (tmp_path / "marks" / "hanging").exists():
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.05)
    (directory,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert list(directory.glob(".train-*.tmp")) and not (directory / "index.json").exists()
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    seen: list[int] = []
    corpus = prep(
        tmp_path / "cache", counted(TRAIN, seen), VAL, num_proc=2, batch_chars=5000, shard_tokens=20_000
    )
    assert corpus.directory == directory and len(seen) == len(TRAIN)  # the lock died with it
    assert np.asarray(corpus.train).tolist() == expected_ids(TRAIN)
    assert not list(directory.glob(".*.tmp"))


# -------------------------------------------------------------------- memory, progress, errors
@pytest.mark.slow
def test_memory_holds_a_few_batches_not_the_corpus(tmp_path):
    words = [w for doc in builtin_docs()[:20] for w in doc.split()]

    def documents(n: int) -> Iterator[str]:
        rng = random.Random(0)
        for _ in range(n):
            yield " ".join(rng.choices(words, k=300))

    def parent_peak(n: int) -> int:
        tracemalloc.start()
        corpus = prep(
            tmp_path / str(n), documents(n), [], num_proc=2, batch_chars=1 << 16, shard_tokens=1 << 16
        )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert corpus.index["splits"]["train"]["documents"] == n
        return peak

    small, large = parent_peak(200), parent_peak(2000)  # about 0.3 MB and 3.4 MB of text
    assert large - small < 1.5e6 and large < 4e6, (small, large)  # holding the corpus would add 3 MB


def test_progress_is_plain_lines_with_speed_and_eta_off_a_terminal(tmp_path):
    out = io.StringIO()
    prep(tmp_path, progress=True, stream=out)
    line = r"prepare train: [\d.]+ MB, [\d.]+ MB/s, [\d,]+ tokens, ETA \d+ s"
    assert re.search(line, out.getvalue()), out.getvalue()
    out = io.StringIO()
    prep(tmp_path, iter(TRAIN), [], fingerprint="a stream", progress=True, stream=out)
    assert "ETA" not in out.getvalue() and "MB/s" in out.getvalue()  # a stream's size is unknown


def test_progress_is_a_bar_on_a_terminal(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    prep(tmp_path, progress=True, stream=out)
    assert "train:" in out.getvalue() and "100%" in out.getvalue()


def test_bad_arguments_name_themselves(tmp_path):
    v1 = SimpleTokenizer.from_corpus(TRAIN[:5], strict=True)
    with pytest.raises(ArgumentError, match="^tokenizer: has no <|endoftext|>"):
        prep(tmp_path, tok=v1)
    with pytest.raises(ArgumentError, match="^num_proc: 0 is not a positive integer"):
        prep(tmp_path, num_proc=0)
    with pytest.raises(ArgumentError, match="^max_tokens: "):
        prep(tmp_path, max_tokens=0)
    with pytest.raises(ArgumentError, match="^val: yields a bytes, not str"):
        prep(tmp_path, TRAIN[:2], [b"x"])
    with pytest.raises(ArgumentError, match="^encoder: "):
        prep(tmp_path, tok=SimpleTokenizer.from_corpus(TRAIN[:5]), encoder="tiktoken")


@pytest.mark.slow
def test_one_large_document_is_cut_for_the_processes_and_keeps_the_ids_of_encoding_it_whole(tmp_path):
    from llm_lab.data.prepare import _pieces

    # One document of ~0.3 MB without <|endoftext|> (text8, a dump in one file), in pieces of about
    # 20k characters: both processes get work, and the ids are those of the document encoded whole.
    whole = "\n\n".join(TRAIN) + "\nend: x = [1, 2]\n" + "tail  \n\n  \t   spaces\n"
    pieces = list(_pieces([whole], 20_000, cut=True, name="train"))
    assert len(pieces) > 8 and [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
    assert "".join(text for text, _ in pieces) == whole
    expected = expected_ids([whole])
    for num_proc, cap in ((2, None), (1, None), (2, 50_000)):
        corpus = prep(tmp_path / f"{num_proc}-{cap}", [whole, "after"], VAL, num_proc=num_proc,
                      batch_chars=20_000, max_tokens=cap)  # fmt: skip
        ids = np.asarray(corpus.train).tolist()
        if cap is None:
            assert ids == expected + expected_ids(["after"])
            assert corpus.train.document_ends().tolist() == [len(expected), len(ids)]
        else:
            assert ids == expected[:cap] and corpus.train.document_ends().tolist() == [cap]

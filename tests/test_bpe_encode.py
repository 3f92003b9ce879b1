"""BPE encoding and decoding: the ids of tiktoken and HF `tokenizers`, fast = readable, streaming."""

from __future__ import annotations

import json
import random
import re
import tracemalloc
from functools import cache
from pathlib import Path

import pytest
import tiktoken
from conftest import FIXTURES, needs_fixtures
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers import bpe_fast
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

EOT = "<|endoftext|>"
# Public knowledge: the pattern of GPT-2's encoder.py (as in tiktoken's gpt2 encoding).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
HARD_TEXTS = [
    "Hello, world! It's 2024; they'll say we've done it.",
    "Accents: café, naïve, Ångström, São Paulo, Dvořák.",
    "Scripts: Привет мир, Γειά σου, 東京タワー, 안녕하세요, مرحبا, हिन्दी, ไทย",
    "Emoji: 🙂👍🏽👩‍👩‍👧 🇫🇷 and ZWJ sequences",
    "Digits: 3.14159 1234567890 007 ٣٤٥ ²³",
    "Spaces:     many    \n\n\n\n  lines \t\t tabs \r\n crlf   \n   ",
    f"Specials: a{EOT}b {EOT} {EOT}{EOT}\n{EOT}",
    f"<|endoftext {EOT[:-1]} <|endoftext|x",
    "",
    " ",
]


def builtin_text() -> str:
    from pydoc_data.topics import topics

    return " ".join(topics[k] for k in sorted(topics))


@cache
def trained() -> FastBPETokenizer:
    """A small vocabulary trained here, so these tests need no shared fixtures."""
    return FastBPETokenizer.train(700, text=builtin_text()[:150_000], special_tokens=[EOT, "<|pad|>"])


@cache
def readable() -> BPETokenizer:
    """The readable tokenizer with the same vocabulary and merges as :func:`trained`."""
    return BPETokenizer(trained().vocab, trained().merges, list(trained().special_tokens))


@cache
def gpt2_pair(cls: type[BPETokenizer] = FastBPETokenizer) -> tuple[BPETokenizer, tiktoken.Encoding]:
    """Our tokenizer and tiktoken, both built from GPT-2's files (ranks made here, offline)."""
    ours = cls.from_gpt2_files(
        FIXTURES / "gpt2_vocab.json", FIXTURES / "gpt2_merges.txt", special_tokens=[EOT]
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    encoder = json.loads((FIXTURES / "gpt2_vocab.json").read_text("utf-8"))
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in encoder.items() if tok != EOT}
    ref = tiktoken.Encoding(
        "gpt2-offline", pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={EOT: encoder[EOT]}
    )
    return ours, ref


@needs_fixtures()
@pytest.mark.parametrize("cls", [BPETokenizer, FastBPETokenizer])
@pytest.mark.parametrize("text", HARD_TEXTS)
def test_gpt2_ids_equal_tiktoken(text, cls):
    ours, ref = gpt2_pair(cls)
    assert ours.encode(text) == ref.encode(text, allowed_special="all")
    # A disallowed special token is plain text, as in tiktoken's encode_ordinary.
    assert ours.encode(text, allowed_special="none") == ref.encode_ordinary(text)
    assert ours.decode(ours.encode(text)) == text


@needs_fixtures()
def test_gpt2_ids_equal_tiktoken_on_long_texts():
    ours, ref = gpt2_pair()
    for name in ["tinystories_sample.txt", "german.txt", "address.txt", "corpus.en"]:
        text = (FIXTURES / name).read_text("utf-8")
        assert ours.encode(text) == ref.encode(text, allowed_special="all"), name


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_fast_encoding_equals_the_readable_one(text):
    assert trained().encode(text) == readable().encode(text)
    assert trained().encode(text, "none") == readable().encode(text, "none")


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_fast_encoding_equals_the_readable_one_on_hostile_texts(text):
    text = text * 3 + " " * 40 + "7" * 50 + "z" * 300 + "\x00\x01\r\n"
    assert trained().encode(text) == readable().encode(text)
    assert trained().encode(text, {"<|pad|>"}) == readable().encode(text, {"<|pad|>"})


def test_fast_encoding_equals_the_readable_one_on_natural_text():
    text = builtin_text()[150_000:200_000]
    assert trained().encode(text) == readable().encode(text)


def test_hf_trained_vocabulary_gives_hf_ids(tmp_path: Path):
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(
        [builtin_text()],
        trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=[EOT],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    hf.save(str(tmp_path / "hf.json"))
    ours = FastBPETokenizer.load(tmp_path / "hf.json")
    text = builtin_text() + EOT.join(HARD_TEXTS)
    assert len(text) > 400_000
    assert ours.encode(text) == hf.encode(text).ids


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_decode_inverts_encode(text):
    assert trained().decode(trained().encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(
            [
                "t",
                "h",
                "e",
                "in",
                "g",
                " ",
                "  ",
                "\n",
                "\t",
                "é",
                "🙂",
                "9",
                "'s",
                EOT,
                "<|",
                "endoftext",
                "|>",
                "<|pad|>",
            ]
        ),
        max_size=60,
    ),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_encode_iterable_equals_encode(parts, cuts):
    text = "".join(parts)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    tok = trained()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bpe_fast, "STREAM_BLOCK", 5)  # encode after almost every piece
        assert list(tok.encode_iterable(pieces)) == tok.encode(text)
        assert list(tok.encode_iterable(pieces, "none")) == tok.encode(text, "none")


@pytest.mark.parametrize("allowed", ["all", "none", {"<|pad|>"}])
def test_encode_iterable_equals_encode_at_every_cut(allowed):
    text = f"the  thing\n\n  {EOT}{EOT} in<|pad|>g  {EOT}\t"
    tok = trained()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bpe_fast, "STREAM_BLOCK", 1)
        for i in range(len(text) + 1):
            streamed = list(tok.encode_iterable([text[:i], text[i:]], allowed))
            assert streamed == tok.encode(text, allowed), i


def test_encode_iterable_memory_does_not_grow_with_the_file(tmp_path: Path):
    rng = random.Random(0)
    words = builtin_text().split()[:3000]

    def peak_bytes(n_lines: int) -> int:
        path = tmp_path / f"{n_lines}.txt"
        with path.open("w", encoding="utf-8") as f:
            for _ in range(n_lines):
                f.write(" ".join(rng.choices(words, k=12)) + f"\n{EOT}" * (rng.random() < 0.1))
                f.write("\n")
        tok = trained()
        tok.encode(" ".join(words))  # fill the cache before measuring
        tracemalloc.start()
        count = sum(1 for _ in tok.encode_file(path))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count > n_lines
        return peak

    small, large = peak_bytes(2_000), peak_bytes(20_000)
    assert large < 2 * small, (small, large)


def test_decode_replaces_invalid_utf8():
    tok = trained()
    lead_byte = next(i for i, b in tok.vocab.items() if b == b"\xf0")  # starts a 4-byte char
    for ids in ([lead_byte], [lead_byte, *tok.encode(" x")], tok.encode("🙂")[:-1]):
        expected = b"".join(tok.vocab[i] for i in ids).decode("utf-8", errors="replace")
        assert tok.decode(ids) == expected and "\ufffd" in expected


@pytest.mark.parametrize("bad", [-1, 10**6, 700 + 2])
def test_decode_rejects_unknown_ids(bad):
    with pytest.raises(DataError, match=str(bad)):
        trained().decode([1, 2, bad])


def test_unknown_allowed_special_names_the_argument():
    with pytest.raises(
        ArgumentError, match=re.escape("allowed_special: names tokens that are not special here")
    ):
        trained().encode("x", allowed_special={"<|nope|>"})


def test_a_file_is_encoded_by_encode_file_never_by_encode(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_text(builtin_text()[:20_000] + EOT + "tail  ", encoding="utf-8")
    assert list(trained().encode_file(path)) == trained().encode(path.read_text("utf-8"))
    with pytest.raises(ArgumentError, match="text: is a PosixPath, not a str .*encode_file"):
        trained().encode(path)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="nowhere.txt"):
        list(trained().encode_file(tmp_path / "nowhere.txt"))

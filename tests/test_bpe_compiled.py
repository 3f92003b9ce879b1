"""The lab's merges in tiktoken and HF `tokenizers`: identical ids, or a refusal that says why."""

from __future__ import annotations

import pickle
import re
from functools import cache

import numpy as np
import pytest
import tiktoken
from conftest import FIXTURES, needs_fixtures
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_lab.errors import ArgumentError
from llm_lab.tokenizers import BPETokenizer, FastBPETokenizer, HFTokenizer, SimpleTokenizer
from llm_lab.tokenizers.compiled import (
    BatchEncoder,
    choose_encoder,
    hf_problem,
    hf_tokenizer,
    tiktoken_encoding,
    tiktoken_problem,
)
from llm_lab.tokenizers.formats import tiktoken_ranks
from llm_lab.tokenizers.pretokenize import GPT2_PATTERN

EOT, PAD = "<|endoftext|>", "<|pad|>"
HOSTILE = [
    "Emoji: 🙂👍🏽👩‍👩‍👧‍👦 🇫🇷🇧🇷 ❤️‍🔥 keycap 1️⃣ and a lone 🏴‍☠️",
    "CJK: 東京タワーは高い。中文測試，한국어 텍스트입니다。全角ＡＢＣ１２３",
    "RTL: مرحبا بالعالم، שלום עולם! \u200fעברית\u200e mixed 123 עם ספרות",
    "Combining: e\u0301 a\u0308 Z\u0351\u0307\u0350a\u0357\u0352l\u033fg\u0344o naïve ñ क्षि",
    " " * 1000 + "x" + " " * 999,
    "7" * 5000 + " 3.14159 ٣٤٥ ²³ 1,000,000",
    "a" * 20000,
    "line one\r\nline two\r\n\r\n\r\r\n  \r\n",
    "NUL\x00in\x00side \x01\x02\x1b[31m \x7f\x85 \u2028\u2029 \t\v\f \u00a0\u3000\ufeff",
    f"{EOT}starts and ends{EOT}",
    f"{EOT}{EOT}{PAD}{EOT} adjacent{PAD}{PAD}",
    f"partial <|endoftext <|endoftext| <|pad endoftext|> <{EOT}> |{EOT}|",
    "private \ue000\U0010fffd end of planes \U000e0001",
    "it's they'll we've I'M DON'T 'sup ''' `code` ~!@#$%^&*()_+",
    "",
]


def builtin_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


@cache
def trained() -> FastBPETokenizer:
    return FastBPETokenizer.train(2000, documents=builtin_docs()[::3], special_tokens=[EOT, PAD])


@cache
def encoders() -> dict[str, BatchEncoder]:
    return {name: BatchEncoder(trained(), name) for name in ("lab", "tiktoken", "hf")}


def test_auto_picks_tiktoken_for_a_tokenizer_the_lab_trained():
    assert tiktoken_problem(trained()) is None and hf_problem(trained()) is None
    assert BatchEncoder(trained()).name == "tiktoken"


def test_the_built_in_corpus_gets_the_same_ids_from_the_lab_tiktoken_and_hf():
    docs = builtin_docs()
    expected = encoders()["lab"].encode_batch(docs)
    assert sum(map(len, expected)) > 100_000
    assert encoders()["tiktoken"].encode_batch(docs) == expected
    assert encoders()["hf"].encode_batch(docs) == expected


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_texts_get_the_same_ids_from_every_encoder(text):
    readable = BPETokenizer(trained().vocab, trained().merges, [EOT, PAD])
    expected = readable.encode(text)
    assert trained().decode(expected) == text
    for name, encoder in encoders().items():
        assert encoder.encode(text) == expected, name


@settings(max_examples=150, deadline=None)
@given(text=st.text(st.characters(exclude_categories=["Cs"]), max_size=60))
def test_any_text_gets_the_same_ids_from_every_encoder(text):
    ids = [encoder.encode(text) for encoder in encoders().values()]
    assert ids[0] == ids[1] == ids[2]


@needs_fixtures()
def test_gpt2_through_the_fast_path_gives_tiktokens_gpt2_ids():
    ours = FastBPETokenizer.from_gpt2_files(FIXTURES / "gpt2_vocab.json", FIXTURES / "gpt2_merges.txt", [EOT])
    text = (FIXTURES / "tinystories_sample.txt").read_text("utf-8") + "".join(HOSTILE)
    reference = tiktoken.Encoding(
        "gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=tiktoken_ranks(ours.vocab, {50256}),
        special_tokens={EOT: 50256},
    )  # fmt: skip
    expected = reference.encode(text, allowed_special="all")
    assert BatchEncoder(ours, "tiktoken").encode(text) == BatchEncoder(ours, "hf").encode(text) == expected


def test_encode_documents_puts_the_end_of_text_id_after_each_document():
    docs = [HOSTILE[0], "", f"x{EOT}y", "tail  "]
    eot = trained().special_tokens[EOT]
    expected = [i for doc in docs for i in (*trained().encode(doc), eot)]
    lengths = [len(trained().encode(doc)) + 1 for doc in docs]
    for name, encoder in encoders().items():
        array, counts = encoder.encode_documents(docs, eot)
        assert array.dtype == np.uint32 and array.tolist() == expected and counts.tolist() == lengths, name
    assert [a.tolist() for a in encoders()["tiktoken"].encode_documents([], eot)] == [[], []]


def test_an_encoder_travels_to_worker_processes_without_its_compiled_engine():
    encoder = encoders()["tiktoken"]
    encoder.encode("warm up")
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy._compiled is None and copy.encode(HOSTILE[1]) == encoder.encode(HOSTILE[1])


# ---------------------------------------------------------------------------------- refusals
def rebuilt(vocab=None, merges=None, specials=(EOT, PAD)) -> FastBPETokenizer:
    tok = trained()
    return FastBPETokenizer(vocab if vocab is not None else tok.vocab, merges or tok.merges, list(specials))


def assert_refused(tok: BPETokenizer, encoder: str, says: str) -> None:
    problem = tiktoken_problem(tok) if encoder == "tiktoken" else hf_problem(tok)
    assert problem is not None and says in problem
    with pytest.raises(ArgumentError, match=re.escape(says)):
        (tiktoken_encoding if encoder == "tiktoken" else hf_tokenizer)(tok)
    with pytest.raises(
        ArgumentError, match=f"^encoder: {encoder} cannot reproduce this tokenizer: .*{re.escape(says)}"
    ):
        choose_encoder(tok, encoder)


def assert_reproduced(tok: BPETokenizer, encoder: str) -> None:
    text = " ".join(builtin_docs()[1:40:2]) + "".join(HOSTILE)
    assert BatchEncoder(tok, encoder).encode(text) == tok.encode(text)


def test_duplicate_byte_strings_are_refused_by_both():
    vocab = dict(trained().vocab)
    vocab[max(vocab) + 1] = vocab[300]
    tok = rebuilt(vocab)
    assert_refused(tok, "tiktoken", "is two tokens")
    assert_refused(tok, "hf", "is two tokens")
    assert choose_encoder(BPETokenizer(tok.vocab, tok.merges, [EOT, PAD]), "auto") == "lab"


def tiny(
    extra: dict[int, bytes], merges: list[tuple[bytes, bytes]]
) -> tuple[FastBPETokenizer, tiktoken.Encoding]:
    """A tokenizer of the single bytes (ids = byte values) plus ``extra``, and the tiktoken
    Encoding its ranks would make if nothing were checked."""
    vocab = {b: bytes([b]) for b in range(256)} | extra
    naive = tiktoken.Encoding(
        "naive", pat_str=GPT2_PATTERN, mergeable_ranks=tiktoken_ranks(vocab, set()), special_tokens={}
    )
    return FastBPETokenizer(vocab, merges), naive


def test_merged_ids_out_of_merge_order_are_refused_by_tiktoken_only():
    # a+b is merged first but gets the larger id: tiktoken, which merges by id, takes b+c first.
    tok, naive = tiny({256: b"bc", 257: b"ab"}, [(b"a", b"b"), (b"b", b"c")])
    assert tok.encode("abc") == [257, 99] and naive.encode("abc") == [97, 256]
    assert_refused(tok, "tiktoken", "merge 1 makes id 256, not larger than merge 0's 257")
    assert_reproduced(tok, "hf")
    # Without tiktoken, "auto" keeps the fast Python encoder (faster than HF on one thread)
    # and takes HF for the readable one.
    assert choose_encoder(tok, "auto") == "lab"
    assert choose_encoder(BPETokenizer(tok.vocab, tok.merges), "auto") == "hf"


def test_a_token_no_merge_makes_is_refused_by_tiktoken_only():
    # abc is in the vocabulary but no merge makes it: tiktoken joins ab+c because abc has a rank.
    tok, naive = tiny({256: b"ab", 257: b"abc"}, [(b"a", b"b")])
    assert tok.encode("abc") == [256, 99] and naive.encode("abc") == [257]
    assert_refused(tok, "tiktoken", "token 257 (b'abc') is made by no merge")
    assert_reproduced(tok, "hf")
    assert_refused(rebuilt(merges=trained().merges[:-1]), "tiktoken", "is made by no merge")


def test_merges_that_tiktokens_ranks_do_not_imply_are_refused():
    # a+b, b+c, then a+bc: tiktoken turns "abc" into ab c, then abc, since ab+c spells a token.
    tok, naive = tiny({256: b"ab", 257: b"bc", 258: b"abc"}, [(b"a", b"b"), (b"b", b"c"), (b"a", b"bc")])
    assert tok.encode("abc") == [256, 99] and naive.encode("abc") == [258]
    assert_refused(tok, "tiktoken", "merge 2 (b'a', b'bc') is not the pair tiktoken's ranks imply")
    assert_reproduced(tok, "hf")


def test_a_special_token_that_begins_another_is_refused_by_tiktoken_only():
    tok = rebuilt(specials=(EOT, PAD, f"{PAD}{EOT}"))
    assert_refused(tok, "tiktoken", f"{PAD!r} begins")
    assert tok.encode(f"x{PAD}{EOT}y")[1:-1] == [tok.special_tokens[f"{PAD}{EOT}"]]  # the longest wins
    assert_reproduced(tok, "hf")


def test_a_special_token_spelled_like_an_ordinary_token_is_refused_by_hf_only():
    vocab = trained().vocab | {1: "Ġthe".encode()}  # " the" is spelled Ġthe in a tokenizer.json
    tok = rebuilt(vocab, specials=(EOT, "Ġthe"))
    assert " the" in tok.decode(tok.encode(" the")) and tok.token_to_id("Ġthe") is not None
    assert_refused(tok, "hf", "spelled like an ordinary token")
    assert_reproduced(tok, "tiktoken")


def test_encoders_for_other_tokenizers(tmp_path):
    words = SimpleTokenizer.from_corpus(builtin_docs()[:5])
    assert choose_encoder(words) == "lab"
    with pytest.raises(
        ArgumentError, match="encoder: tiktoken reproduces byte-level BPE, not SimpleTokenizer"
    ):
        choose_encoder(words, "tiktoken")
    hf = HFTokenizer(trained().save(tmp_path / "tokenizer.json"))
    assert choose_encoder(hf) == "hf" and BatchEncoder(hf).encode(HOSTILE[2]) == trained().encode(HOSTILE[2])
    with pytest.raises(ArgumentError, match="encoder: unknown encoder 'rust'"):
        choose_encoder(trained(), "rust")

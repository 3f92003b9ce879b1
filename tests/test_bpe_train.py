"""BPE training: the readable loop equals the CS336 reference, the fast one equals the readable one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, needs_fixtures
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.bpe_fast import BPETrainer, FastBPETokenizer
from llm_lab.tokenizers.formats import token_to_str
from llm_lab.tokenizers.pretokenize import count_corpus, count_pretokens

EOT = "<|endoftext|>"
BOTH = [BPETokenizer, FastBPETokenizer]


def cs336_reference() -> tuple[list[tuple[bytes, bytes]], dict[int, bytes]]:
    """The merges and vocabulary of the CS336 reference implementation, as bytes."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def as_bytes(s: str) -> bytes:
        return bytes(byte_of[c] for c in s)

    lines = (FIXTURES / "train-bpe-reference-merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [(as_bytes(a), as_bytes(b)) for a, b in (line.split(" ") for line in lines)]
    reference = json.loads((FIXTURES / "train-bpe-reference-vocab.json").read_text("utf-8"))
    vocab = {i: (s.encode() if s == EOT else as_bytes(s)) for s, i in reference.items()}
    return merges, vocab


@needs_fixtures()
@pytest.mark.parametrize("cls", BOTH)
def test_merges_and_vocab_equal_the_cs336_reference(cls):
    tok = cls.train(500, files=[FIXTURES / "corpus.en"], special_tokens=[EOT])
    merges, vocab = cs336_reference()
    assert tok.merges == merges
    assert tok.vocab == vocab


# Few letters, so that many pairs tie and the tie-break decides most merges.
small_docs = st.lists(st.text(alphabet="ab c\n'é", max_size=40), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(docs=small_docs, n_merges=st.integers(0, 30), specials=st.booleans())
def test_fast_training_equals_the_readable_loop(docs, n_merges, specials):
    special_tokens = ["c\n"] if specials else []
    vocab_size = 256 + len(special_tokens) + n_merges
    counts = count_corpus(documents=docs, special_tokens=special_tokens, num_workers=1)
    if not counts:
        for cls in BOTH:
            with pytest.raises(DataError, match="empty"):
                cls.train(vocab_size, documents=docs, special_tokens=special_tokens, num_workers=1)
        return
    readable = BPETokenizer.train(vocab_size, documents=docs, special_tokens=special_tokens, num_workers=1)
    fast = FastBPETokenizer.train(vocab_size, documents=docs, special_tokens=special_tokens, num_workers=1)
    assert fast.merges == readable.merges and fast.vocab == readable.vocab


def test_fast_training_equals_the_readable_loop_on_natural_text():
    text = builtin_text()[:40_000]
    readable = BPETokenizer.train(420, text=text, special_tokens=[EOT])
    fast = FastBPETokenizer.train(420, text=text, special_tokens=[EOT])
    assert fast.merges == readable.merges and len(fast.merges) == 420 - 257


@pytest.mark.parametrize("cls", BOTH)
def test_ties_go_to_the_lexicographically_greatest_pair(cls):
    # (a,b) and (c,d) both occur once; CS336 takes the greater pair of byte strings first.
    tok = cls.train(258, documents=["ab", "cd"])
    assert tok.merges == [(b"c", b"d"), (b"a", b"b")]


def test_trainer_merges_in_blocks_and_records_falling_pair_counts():
    counts = count_pretokens(builtin_text()[:50_000])
    trainer = BPETrainer(counts, [EOT])
    assert [trainer.merge(10), trainer.merge(10)] == [10, 10]
    whole = FastBPETokenizer.learn_merges(counts, 257 + 20, [EOT])
    assert (trainer.vocab, trainer.merges) == whole
    assert trainer.merge_counts == sorted(trainer.merge_counts, reverse=True)
    # The first merge's count is the most frequent pair's count, recounted here from scratch.
    pairs: Counter[tuple[bytes, bytes]] = Counter()
    for word, n in counts.items():
        data = word.encode()
        for i in range(len(data) - 1):
            pairs[data[i : i + 1], data[i + 1 : i + 2]] += n
    assert trainer.merge_counts[0] == max(pairs.values()) == pairs[trainer.merges[0]]


def test_trainer_stops_when_nothing_is_left_to_merge():
    trainer = BPETrainer(Counter({"aaaa": 3, "b": 1}))
    assert trainer.merge(100) == 2  # a+a, then aa+aa: each word is one token


def test_vocab_layout_equals_hf_trainer():
    """HF's ByteLevel trainer also puts specials first and bytes in GPT-2 order."""
    text = "low lower lowest newer wider " * 50
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(
        [text],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=[EOT, "<pad>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    ours = FastBPETokenizer.train(300, text=text, special_tokens=[EOT, "<pad>"])
    hf_vocab = {i: s for s, i in hf.get_vocab().items()}
    ours_as_str = [ours.vocab[i].decode() if i < 2 else token_to_str(ours.vocab[i]) for i in range(258)]
    assert ours_as_str == [hf_vocab[i] for i in range(258)]


def test_special_tokens_are_never_merged_and_split_documents():
    text = f"hello{EOT}hello{EOT}{EOT}world{EOT}"
    tok = FastBPETokenizer.train(300, text=text * 20, special_tokens=[EOT])
    assert tok.vocab[0] == EOT.encode()
    assert all(b"<|" not in a + b and b"|>" not in a + b for a, b in tok.merges)
    assert count_pretokens(text, [EOT]) == Counter(["hello", "hello", "world"])


def test_pretokens_equal_hf_byte_level_pretokenizer():
    text = "Hello  world's 123 4567\n\n  x\t\ty  ... naïve 東京 🙂!!  \n"
    ours = Counter(token_to_str(p.encode()) for p in count_pretokens(text).elements())
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    assert ours == Counter(piece for piece, _ in hf.pre_tokenize_str(text))


# ------------------------------------------------------------------ one source, never misread
def test_a_file_trains_on_its_content_not_on_its_name(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_text(builtin_text()[:30_000], encoding="utf-8")
    from_file = FastBPETokenizer.train(400, files=[path])
    assert from_file.merges == FastBPETokenizer.train(400, text=path.read_text("utf-8")).merges
    assert len(from_file.merges) == 400 - 256


def test_the_old_positional_call_is_refused():
    with pytest.raises(TypeError, match="positional"):
        FastBPETokenizer.train("corpus.txt", 500)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "arg", "says"),
    [
        ({}, "text", "exactly one source"),
        ({"text": "abc", "documents": ["abc"]}, "documents", "not text and documents"),
        ({"text": Path("corpus.txt")}, "text", "files="),
        ({"files": "corpus.txt"}, "files", "not a list of paths"),
        ({"files": Path("corpus.txt")}, "files", "not a list of paths"),
        ({"documents": "one long text"}, "documents", "one document per character"),
    ],
)
def test_an_ambiguous_source_is_refused_with_the_fix(kwargs, arg, says):
    with pytest.raises(ArgumentError, match=f"^{arg}: .*{says}"):
        FastBPETokenizer.train(300, **kwargs)


def test_text_that_names_a_file_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("corpus.txt").write_text("some text", encoding="utf-8")
    with pytest.raises(ArgumentError, match=r"name of a file.*files=\['corpus.txt'\]"):
        FastBPETokenizer.train(300, text="corpus.txt")


def test_documents_must_be_strings():
    with pytest.raises(ArgumentError, match="documents: yields a bytes"):
        FastBPETokenizer.train(300, documents=[b"bytes"])  # type: ignore[list-item]


# ------------------------------------------------------------------------------ bad settings
@pytest.mark.parametrize("cls", BOTH)
def test_vocab_size_too_small_names_the_argument(cls):
    with pytest.raises(ArgumentError, match=r"^vocab_size: 256 is too small \(use at least .* = 257\)"):
        cls.train(256, text="some text", special_tokens=[EOT])


@pytest.mark.parametrize("specials", [[""], [EOT, EOT], EOT])
def test_bad_special_tokens_name_the_argument(specials):
    with pytest.raises(ArgumentError, match="^special_tokens: "):
        FastBPETokenizer.train(300, text="some text", special_tokens=specials)


@pytest.mark.parametrize(
    "source",
    [{"text": ""}, {"documents": []}, {"documents": [EOT, ""]}, {"files": ["/nonexistent/corpus.txt"]}],
)
def test_empty_or_missing_corpus_is_a_data_error(source):
    with pytest.raises(DataError):
        FastBPETokenizer.train(300, special_tokens=[EOT], **source)


def test_non_utf8_file_is_a_data_error_naming_it(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt"):
        FastBPETokenizer.train(300, files=[path])


def builtin_text() -> str:
    from pydoc_data.topics import topics

    return " ".join(topics[k] for k in sorted(topics))


@pytest.mark.parametrize("cls", [BPETokenizer, FastBPETokenizer])
def test_a_vocabulary_the_corpus_cannot_fill_is_said(cls, caplog: pytest.LogCaptureFixture):
    """'ab ab ab' has two pre-tokens ('ab', ' ab'): 256 bytes + 2 merges ('a b', then ' ab'), no more."""
    tokenizer = cls.train(1000, text="ab ab ab")
    assert tokenizer.vocab_size == 258
    assert "vocab_size=1000: BPE stopped at 258 tokens" in caplog.text

"""The word tokenizer (Raschka ch. 2.2–2.4): splitting, vocabulary, V1/V2, settings that survive a file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers import SimpleTokenizer, Vocabulary, split_words
from llm_lab.tokenizers.simple import ENDOFTEXT, UNK, one_hot

TEXT = 'Hello, world. Is this-- a test? "Yes," she said; don\'t stop!'


def test_split_keeps_punctuation_as_tokens():
    assert split_words(TEXT) == [
        "Hello", ",", "world", ".", "Is", "this", "-", "-", "a", "test", "?", '"', "Yes", ",", '"',
        "she", "said", ";", "don't", "stop", "!",
    ]  # fmt: skip
    assert split_words(TEXT, lowercase=True, keep_punctuation=False)[:3] == ["hello", "world", "is"]


def test_vocabulary_orders_by_frequency_and_applies_min_count_and_max_vocab_size():
    tokens = ["b", "a", "b", "c", "b", "a"]
    v = Vocabulary.from_tokens(tokens)
    assert v.itos == ["b", "a", "c"] and v.counts == [3, 2, 1]
    assert Vocabulary.from_tokens(tokens, min_count=2).itos == ["b", "a"]
    v = Vocabulary.from_tokens(tokens, max_vocab_size=3, specials=[UNK])
    assert v.itos == ["b", "a", UNK]


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"min_count": 5}, "min_count"),
        ({"min_count": 0}, "min_count"),
        ({"max_vocab_size": 1}, "max_vocab_size"),
    ],
)
def test_impossible_vocabulary_settings_name_their_argument(kwargs, arg):
    with pytest.raises(ArgumentError, match=f"^{arg}: "):
        Vocabulary.from_tokens(["a", "b"], specials=[UNK], **kwargs)


def test_strict_tokenizer_names_the_unknown_word():
    tok = SimpleTokenizer.from_corpus([TEXT], strict=True)
    # decode joins tokens with spaces but none before closing punctuation; re-splitting gives the same tokens
    assert split_words(tok.decode(tok.encode(TEXT))) == split_words(TEXT)
    assert tok.decode(tok.encode("Hello, world.")) == "Hello, world."
    with pytest.raises(DataError, match="'zebra'"):
        tok.encode("Hello zebra")
    with pytest.raises(ArgumentError, match="^strict: "):
        tok.encode_documents(["Hello"])


def test_improved_tokenizer_maps_unknowns_and_separates_documents():
    tok = SimpleTokenizer.from_corpus(["the cat sat", "the dog"])
    ids = tok.encode_documents(["the zebra", "cat"])
    assert [tok.id_to_token(i) for i in ids] == ["the", UNK, ENDOFTEXT, "cat", ENDOFTEXT]
    with pytest.raises(DataError, match="out of range"):
        tok.decode([len(tok.vocab)])


def test_punctuation_and_case_are_settings_of_the_tokenizer():
    docs = [TEXT, "Hello again, World!"]
    words = SimpleTokenizer.from_corpus(docs, lowercase=True, punctuation=False)
    expected = Counter(w for d in docs for w in split_words(d, lowercase=True, keep_punctuation=False))
    assert dict(zip(words.vocab.itos, words.vocab.counts, strict=True)) == {**expected, UNK: 0, ENDOFTEXT: 0}
    assert words.tokenize("Hello, World!") == ["hello", "world"]
    assert words.decode(words.encode("Hello, World!")) == "hello world"
    assert SimpleTokenizer.from_corpus(docs).tokenize("Hello, World!") == ["Hello", ",", "World", "!"]


@pytest.mark.parametrize("settings", [{}, {"strict": True}, {"lowercase": True, "punctuation": False}])
def test_save_then_load_keeps_vocabulary_counts_and_settings(tmp_path: Path, settings):
    tok = SimpleTokenizer.from_corpus([TEXT, "the the cat"], min_count=1, **settings)
    back = SimpleTokenizer.load(tok.save(tmp_path / "words.json"))
    assert (back.vocab.itos, back.vocab.counts) == (tok.vocab.itos, tok.vocab.counts)
    assert (back.strict, back.lowercase, back.punctuation) == (tok.strict, tok.lowercase, tok.punctuation)
    assert back.encode(TEXT) == tok.encode(TEXT)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.update(kind="something else"),
        lambda d: d.update(version=2),
        lambda d: d.update(counts=d["counts"][:-1]),
        lambda d: d.update(tokens=[*d["tokens"][:-1], d["tokens"][0]]),  # a token twice
        lambda d: d.update(strict="no"),
        lambda d: (d["counts"].pop(d["tokens"].index(UNK)), d["tokens"].remove(UNK)),  # V2 without <|unk|>
        lambda d: d.pop("tokens"),
    ],
)
def test_a_bad_word_tokenizer_file_is_a_data_error_naming_it(tmp_path: Path, corrupt):
    path = SimpleTokenizer.from_corpus([TEXT]).save(tmp_path / "words.json")
    document = json.loads(path.read_text("utf-8"))
    corrupt(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError, match="words.json"):
        SimpleTokenizer.load(path)


def test_one_hot_times_weight_equals_embedding_lookup():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(7, 4)
    ids = torch.tensor([[3, 0, 6], [1, 1, 2]])
    assert torch.allclose(one_hot(ids, 7) @ emb.weight, emb(ids))
    assert one_hot(ids, 7).sum(-1).eq(1).all()

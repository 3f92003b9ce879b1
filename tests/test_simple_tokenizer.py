import pytest
import torch

from llm_lab.errors import ConfigError, DataError
from llm_lab.tokenizers import SimpleTokenizer, Vocabulary, split_words
from llm_lab.tokenizers.simple import ENDOFTEXT, UNK, one_hot

TEXT = 'Hello, world. Is this-- a test? "Yes," she said; don\'t stop!'


def test_split_keeps_punctuation_as_tokens():
    assert split_words(TEXT) == [
        "Hello",
        ",",
        "world",
        ".",
        "Is",
        "this",
        "-",
        "-",
        "a",
        "test",
        "?",
        '"',
        "Yes",
        ",",
        '"',
        "she",
        "said",
        ";",
        "don't",
        "stop",
        "!",
    ]
    assert split_words(TEXT, lowercase=True, keep_punctuation=False)[:3] == ["hello", "world", "is"]


def test_vocabulary_orders_by_frequency_and_applies_min_count_and_max_size():
    tokens = ["b", "a", "b", "c", "b", "a"]
    v = Vocabulary.from_tokens(tokens)
    assert v.itos == ["b", "a", "c"] and v.counts == [3, 2, 1]
    assert Vocabulary.from_tokens(tokens, min_count=2).itos == ["b", "a"]
    v = Vocabulary.from_tokens(tokens, max_size=3, specials=[UNK])
    assert v.itos == ["b", "a", UNK]


def test_min_count_that_empties_the_vocabulary_is_a_config_error():
    with pytest.raises(ConfigError, match="data.min_count"):
        Vocabulary.from_tokens(["a", "b"], min_count=5)


def test_strict_tokenizer_names_the_unknown_word():
    tok = SimpleTokenizer.from_corpus([TEXT], strict=True)
    # decode joins tokens with spaces but none before closing punctuation; re-splitting gives the same tokens
    assert split_words(tok.decode(tok.encode(TEXT))) == split_words(TEXT)
    assert tok.decode(tok.encode("Hello, world.")) == "Hello, world."
    with pytest.raises(DataError, match="'zebra'"):
        tok.encode("Hello zebra")


def test_improved_tokenizer_maps_unknowns_and_separates_documents():
    tok = SimpleTokenizer.from_corpus(["the cat sat", "the dog"])
    ids = tok.encode_documents(["the zebra", "cat"])
    assert [tok.vocab.itos[i] for i in ids] == ["the", UNK, ENDOFTEXT, "cat", ENDOFTEXT]
    with pytest.raises(DataError, match="out of range"):
        tok.decode([len(tok.vocab)])


def test_one_hot_times_weight_equals_embedding_lookup():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(7, 4)
    ids = torch.tensor([[3, 0, 6], [1, 1, 2]])
    assert torch.allclose(one_hot(ids, 7) @ emb.weight, emb(ids))
    assert one_hot(ids, 7).sum(-1).eq(1).all()


def test_simple_tokenizer_experiment_builds_the_vocabulary_and_measures_unknowns(tmp_path):
    from collections import Counter

    from conftest import run_in_process

    from llm_lab.data.corpus import load_corpus, split_documents

    out = tmp_path / "run"
    metrics = run_in_process(out, "simple_tokenizer", "data.max_documents=60", "tokenizer.min_count=2")
    vocab = set(SimpleTokenizer.load(out / "tokenizer.json").vocab.itos)
    # recompute both numbers from the same split (seed 42, 10 %), counting words directly
    train, val = split_documents(load_corpus(max_documents=60), 0.1, seed=42)
    counts = Counter(w for d in train for w in split_words(d))
    assert vocab == {w for w, c in counts.items() if c >= 2} | {UNK, ENDOFTEXT}
    val_words = [w for d in val for w in split_words(d)]
    expected = sum(w not in vocab for w in val_words) / len(val_words)
    assert metrics["val/unk_rate"] == pytest.approx(expected) and 0 < expected < 0.5

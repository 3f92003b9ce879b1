"""`python train.py experiment=simple_tokenizer`: the stage (the tokenizer itself: test_simple_words.py)."""

from collections import Counter

import pytest
from conftest import run_in_process

from llm_lab.data.corpus import Corpus
from llm_lab.tokenizers import split_words
from llm_lab.tokenizers.simple import ENDOFTEXT, UNK, SimpleTokenizer


def test_simple_tokenizer_experiment_builds_the_vocabulary_and_measures_unknowns(tmp_path):
    out = tmp_path / "run"
    metrics = run_in_process(out, "simple_tokenizer", "corpus.max_documents=60", "tokenizer.min_count=2")
    vocab = set(SimpleTokenizer.load(out / "tokenizer.json").vocab.itos)
    # recompute both numbers from the same split (seed 42, 10 %), counting words directly
    split = Corpus(max_documents=60, seed=42).load()
    train, val = split.train, split.val
    counts = Counter(w for d in train for w in split_words(d))
    assert vocab == {w for w, c in counts.items() if c >= 2} | {UNK, ENDOFTEXT}
    val_words = [w for d in val for w in split_words(d)]
    expected = sum(w not in vocab for w in val_words) / len(val_words)
    assert metrics["val/unk_rate"] == pytest.approx(expected) and 0 < expected < 0.5

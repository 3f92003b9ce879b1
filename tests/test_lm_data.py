"""The language-model DataModule: one id stream whatever the tokenizer, split by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_lab.data.corpus import Corpus
from llm_lab.data.lm import LMDataModule
from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from llm_lab.tokenizers.build import build_tokenizer
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.simple import SimpleTokenizer

EOT = "<|endoftext|>"


def _stream(tokenizer, docs: list[str], eot: int) -> list[int]:
    return [i for d in docs for i in (*tokenizer.encode(d), eot)]


def test_hf_tokenizer_file_gives_the_ids_of_the_lab_tokenizer_that_wrote_it(tmp_path: Path):
    corpus = Corpus(max_documents=30, seed=0).load()
    bpe = FastBPETokenizer.train(400, documents=corpus.train, special_tokens=[EOT])
    bpe.save(tmp_path / "tokenizer.json")

    dm = LMDataModule(corpus, HFTokenizer(tmp_path / "tokenizer.json"), context_length=16, batch_size=4)
    dm.setup("fit")
    eot = bpe.token_to_id(EOT)
    assert eot is not None
    expected = _stream(bpe, corpus.train, eot) + _stream(bpe, corpus.val, eot)
    assert dm.model_kwargs()["vocab_size"] == len(bpe.vocab)
    assert dm.split == len(_stream(bpe, corpus.train, eot))
    first_x, first_y = dm.train_set[0]
    assert first_x.tolist() == expected[:16] and first_y.tolist() == expected[1:17]
    val_x, _ = dm.val_set[0]
    assert val_x.tolist() == expected[dm.split : dm.split + 16]


def test_memory_mapped_ids_equal_the_in_memory_ones(tmp_path: Path):
    corpus = Corpus(max_documents=20, seed=0).load()
    words = SimpleTokenizer.from_corpus(corpus.train)
    in_memory = LMDataModule(corpus, words, context_length=8)
    on_disk = LMDataModule(corpus, words, context_length=8, ids_dir=str(tmp_path / "ids"))
    in_memory.setup("fit")
    on_disk.setup("fit")
    assert isinstance(on_disk.train_set.ids, np.memmap)
    assert np.array_equal(np.asarray(on_disk.train_set.ids), in_memory.train_set.ids)
    assert on_disk.split == in_memory.split


def test_a_tokenizer_without_endoftext_cannot_separate_documents():
    corpus = Corpus(max_documents=5).load()
    strict = SimpleTokenizer.from_corpus(corpus.train, strict=True)  # V1: no special tokens
    with pytest.raises(DataError, match="<\\|endoftext\\|>"):
        LMDataModule(corpus, strict)


def test_bad_tokenizer_settings_name_their_arguments():
    corpus = Corpus(max_documents=5).load()

    def build(kind: str, **settings):
        return build_tokenizer(kind, lambda: corpus.train, corpus.fingerprint, **settings)

    with pytest.raises(ArgumentError, match="^kind: unknown tokenizer 'sentencepiece'"):
        build("sentencepiece")
    with pytest.raises(ArgumentError, match="^vocab_size"):
        build("bpe", vocab_size=100, special_tokens=[EOT])
    with pytest.raises(ArgumentError, match="^path"):
        build("hf")

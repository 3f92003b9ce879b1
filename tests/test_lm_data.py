"""The language-model DataModule: one id stream whatever the tokenizer, split by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_lab.data.corpus import load_corpus, split_documents
from llm_lab.data.lm import LMDataModule
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

EOT = "<|endoftext|>"


def _stream(tokenizer, docs: list[str], eot: int) -> list[int]:
    return [i for d in docs for i in (*tokenizer.encode(d), eot)]


def test_hf_tokenizer_file_gives_the_ids_of_the_lab_tokenizer_that_wrote_it(tmp_path: Path):
    train, val = split_documents(load_corpus(max_documents=30), 0.1, seed=0)
    bpe = FastBPETokenizer.train(400, documents=train, special_tokens=[EOT])
    bpe.save(tmp_path / "tokenizer.json")

    dm = LMDataModule(
        tokenizer="hf",
        tokenizer_path=str(tmp_path / "tokenizer.json"),
        context_length=16,
        max_documents=30,
        seed=0,
        batch_size=4,
    )
    dm.setup("fit")
    eot = bpe.special_tokens[EOT]
    expected = _stream(bpe, train, eot) + _stream(bpe, val, eot)
    assert dm.model_kwargs()["vocab_size"] == len(bpe.vocab)
    assert dm.split == len(_stream(bpe, train, eot))
    first_x, first_y = dm.train_set[0]
    assert first_x.tolist() == expected[:16] and first_y.tolist() == expected[1:17]
    val_x, _ = dm.val_set[0]
    assert val_x.tolist() == expected[dm.split : dm.split + 16]


def test_memory_mapped_ids_equal_the_in_memory_ones(tmp_path: Path):
    kwargs = dict(tokenizer="word", context_length=8, max_documents=20, seed=0)
    in_memory = LMDataModule(**kwargs)
    on_disk = LMDataModule(**kwargs, ids_dir=str(tmp_path / "ids"))
    in_memory.setup("fit")
    on_disk.setup("fit")
    assert isinstance(on_disk.train_set.ids, np.memmap)
    assert np.array_equal(np.asarray(on_disk.train_set.ids), in_memory.train_set.ids)
    assert on_disk.split == in_memory.split


def test_bad_tokenizer_settings_name_their_keys():
    with pytest.raises(ConfigError, match="data.tokenizer"):
        LMDataModule(tokenizer="sentencepiece", max_documents=5).setup("fit")
    with pytest.raises(ArgumentError, match="vocab_size"):
        LMDataModule(tokenizer="bpe", vocab_size=100, max_documents=5).setup("fit")
    with pytest.raises(ConfigError, match="data.tokenizer_path"):
        LMDataModule(tokenizer="hf", max_documents=5).setup("fit")

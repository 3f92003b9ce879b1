"""The language-model DataModule: the corpus prepared once into ids (identical to the tokenizer's
own), training windows from training documents only, reused from the cache by the next run."""

from __future__ import annotations

from pathlib import Path

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


def test_windows_hold_the_ids_of_each_side_and_nothing_else(tmp_path: Path):
    """A HF tokenizer file written by the lab's BPE gives the lab's ids; training windows read the
    training documents' ids and validation windows the validation documents' (no shared token)."""
    corpus = Corpus(max_documents=30, seed=0)
    split = corpus.load()
    bpe = FastBPETokenizer.train(400, documents=split.train, special_tokens=[EOT])
    bpe.save(tmp_path / "tokenizer.json")
    dm = LMDataModule(
        corpus, HFTokenizer(tmp_path / "tokenizer.json"), context_length=16, cache_dir=str(tmp_path)
    )
    dm.setup("fit")
    eot = bpe.token_to_id(EOT)
    assert eot is not None and dm.model_kwargs()["vocab_size"] == len(bpe.vocab)
    train, val = _stream(bpe, split.train, eot), _stream(bpe, split.val, eot)
    assert list(dm.train_set.ids[0 : len(dm.train_set.ids)]) == train
    assert list(dm.val_set.ids[0 : len(dm.val_set.ids)]) == val
    first_x, first_y = dm.train_set[0]
    assert first_x.tolist() == train[:16] and first_y.tolist() == train[1:17]


def test_a_second_datamodule_reuses_the_prepared_ids(tmp_path: Path):
    corpus = Corpus(max_documents=20, seed=0)
    words = SimpleTokenizer.from_corpus(corpus.train_documents())
    first = LMDataModule(corpus, words, context_length=8, cache_dir=str(tmp_path))
    first.setup("fit")
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    stamp = (folder / "index.json").stat().st_mtime_ns
    again = LMDataModule(corpus, words, context_length=8, cache_dir=str(tmp_path))
    again.setup("fit")
    assert (folder / "index.json").stat().st_mtime_ns == stamp  # not prepared again
    assert (
        len(again.train_set) == len(first.train_set)
        and again.train_set[3][0].tolist() == first.train_set[3][0].tolist()
    )


def test_a_tokenizer_without_endoftext_cannot_separate_documents(tmp_path: Path):
    corpus = Corpus(max_documents=5)
    strict = SimpleTokenizer.from_corpus(corpus.train_documents(), strict=True)  # V1: no special tokens
    with pytest.raises(DataError, match="<\\|endoftext\\|>"):
        LMDataModule(corpus, strict, cache_dir=str(tmp_path))


def test_bad_tokenizer_settings_name_their_arguments():
    corpus = Corpus(max_documents=5)

    def build(kind: str, **settings):
        return build_tokenizer(kind, corpus.train_documents, corpus.fingerprint(), **settings)

    with pytest.raises(ArgumentError, match="^kind: unknown tokenizer 'sentencepiece'"):
        build("sentencepiece")
    with pytest.raises(ArgumentError, match="^vocab_size"):
        build("bpe", vocab_size=100, special_tokens=[EOT])
    with pytest.raises(ArgumentError, match="^path"):
        build("hf")

"""Language-model data: corpus → tokenizer → one id stream → next-token windows.

The tokenizer is chosen by ``data.tokenizer``:
- ``word``: the regex word tokenizer with ``<|unk|>`` and ``<|endoftext|>`` (Raschka ch. 2.4);
- ``bpe``: the lab's byte-level BPE, trained on the training documents (ch. 2.5), or loaded from
  ``data.tokenizer_path`` (a ``tokenizer.json``);
- ``hf``: any Hugging Face ``tokenizers`` tokenizer (``data.tokenizer_path`` = file or hub name).

Documents are joined with ``<|endoftext|>``. Training ids come first in the stream and validation
ids after them; windows never cross that boundary (see :class:`TokenWindows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch.utils.data import DataLoader

from llm_lab.data.resumable import ResumableLoader, rank_and_world
from llm_lab.data.text import TextDataModule
from llm_lab.data.windows import TokenWindows, id_dtype, write_ids
from llm_lab.errors import ConfigError
from llm_lab.tokenizers.simple import ENDOFTEXT

TOKENIZERS = ("word", "bpe", "hf")


class Tokenizer(Protocol):
    """What the language-model stages need of a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    @property
    def vocab_size(self) -> int: ...


def build_tokenizer(
    kind: str,
    train_docs: list[str],
    path: str | None = None,
    vocab_size: int = 1024,
    min_count: int = 1,
) -> tuple[Tokenizer, int]:
    """Return the tokenizer and the id of ``<|endoftext|>``."""
    if kind == "word":
        from llm_lab.tokenizers.simple import SimpleTokenizer

        word = SimpleTokenizer.from_corpus(train_docs, min_count=min_count)
        return word, word.vocab.stoi[ENDOFTEXT]
    if kind == "bpe":
        from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

        if path:
            bpe = FastBPETokenizer.load(path)
        else:
            bpe = FastBPETokenizer.train(vocab_size, documents=train_docs, special_tokens=[ENDOFTEXT])
        if ENDOFTEXT not in bpe.special_tokens:
            raise ConfigError("data.tokenizer_path", f"{path} has no {ENDOFTEXT} special token", "add one")
        return bpe, bpe.special_tokens[ENDOFTEXT]
    if kind == "hf":
        from llm_lab.tokenizers.hf import HFTokenizer

        if not path:
            raise ConfigError(
                "data.tokenizer_path", "tokenizer=hf needs a tokenizer.json or hub name", "set it"
            )
        hf = HFTokenizer(path)
        eot = hf.token_to_id(ENDOFTEXT)
        if eot is None:
            raise ConfigError(
                "data.tokenizer_path", f"{path} has no {ENDOFTEXT} token", "use a GPT-style one"
            )
        return hf, eot
    raise ConfigError("data.tokenizer", f"unknown tokenizer {kind!r}", f"use one of {TOKENIZERS}")


class LMDataModule(TextDataModule):
    """Next-token windows of ``context_length`` ids.

    ``model_kwargs()`` hands the model ``vocab_size`` and the tokenizer (for samples and saving).
    """

    def __init__(
        self,
        tokenizer: str = "bpe",
        tokenizer_path: str | None = None,
        vocab_size: int = 1024,
        min_count: int = 1,
        context_length: int = 64,
        stride: int | None = None,
        ids_dir: str | None = None,
        shuffle: bool = True,
        **corpus: Any,
    ) -> None:
        super().__init__(**corpus)
        if context_length < 1:
            raise ConfigError("data.context_length", f"{context_length} < 1", "use a positive length")
        self.tokenizer_kind = tokenizer
        self.tokenizer_path = tokenizer_path
        self.vocab_size = vocab_size
        self.min_count = min_count
        self.context_length = context_length
        self.stride = stride
        self.ids_dir = ids_dir
        self.shuffle = shuffle

    def build(self, train_docs: list[str], val_docs: list[str]) -> None:
        self.tokenizer, self.eot_id = build_tokenizer(
            self.tokenizer_kind, train_docs, self.tokenizer_path, self.vocab_size, self.min_count
        )
        n_train = 0

        def chunks() -> Iterable[list[int]]:
            nonlocal n_train
            for doc in train_docs:
                ids = self.tokenizer.encode(doc) + [self.eot_id]
                n_train += len(ids)
                yield ids
            for doc in val_docs:
                yield self.tokenizer.encode(doc) + [self.eot_id]

        ids: np.ndarray
        if self.ids_dir:
            # Corpora larger than memory: stream the ids to disk and memory-map them.
            Path(self.ids_dir).mkdir(parents=True, exist_ok=True)
            ids = write_ids(Path(self.ids_dir) / "ids.bin", chunks(), self.tokenizer.vocab_size)
        else:
            ids = np.fromiter((i for c in chunks() for i in c), dtype=id_dtype(self.tokenizer.vocab_size))
        self.split = n_train
        self.train_set = TokenWindows(ids, self.context_length, self.stride, 0, self.split)
        # Validation windows never overlap each other, so every validation token is scored once.
        self.val_set = TokenWindows(ids, self.context_length, self.context_length, self.split, len(ids))

    def train_dataloader(self) -> DataLoader:
        # drop_last keeps batch shapes fixed, unless that would leave no batch at all.
        drop_last = len(self.train_set) >= self.batch_size * rank_and_world()[1]
        return ResumableLoader(
            self.train_set, self.batch_size, self.shuffle, self.seed, drop_last, self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.tokenizer.vocab_size, "tokenizer": self.tokenizer}

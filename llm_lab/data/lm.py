"""Language-model data: documents → the run's tokenizer → prepared ids → next-token windows.

The corpus is encoded once (``llm_lab.data.prepare``: uint16/uint32 shards, ``<|endoftext|>`` after
each document, GPT-2's separator; Raschka ch. 2.4) into the cache, by the fastest encoder that gives
the tokenizer's own ids, and memory-mapped from then on: a second run, every trial of a sweep and
every DDP rank reuse it, and a corpus larger than memory trains the same way (nanoGPT's ``.bin``).
Training and validation ids come from disjoint documents; windows never cross from one to the other.
"""

from __future__ import annotations

import tempfile
from typing import Any

from torch.utils.data import DataLoader

from llm_lab.data.corpus import Corpus
from llm_lab.data.prepare import PreparedCorpus, prepare
from llm_lab.data.resumable import EveryItemOnce, ResumableLoader, rank_and_world
from llm_lab.data.text import TextDataModule
from llm_lab.data.windows import TokenWindows
from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT


class LMDataModule(TextDataModule):
    """Next-token windows of ``context_length`` ids, ``stride`` apart (``None``: no overlap).

    The ids are prepared under ``cache_dir`` (None: a temporary folder) by ``num_proc`` processes
    with ``encoder`` (``auto``: the fastest with identical ids; ``lab``: the tokenizer's own
    Python ``encode``), at most ``max_tokens`` of them for training. ``model_kwargs()`` hands the
    model its ``vocab_size``.
    """

    NEEDS_END_OF_TEXT = True  # documents are separated by it (the preflight checks the tokenizer)

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Tokenizer,
        context_length: int = 64,
        stride: int | None = None,
        shuffle: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        num_proc: int = 1,
        encoder: str = "auto",
        max_tokens: int | None = None,
    ) -> None:
        super().__init__(corpus, tokenizer, batch_size, num_workers, seed)
        LMDataModule.check_arguments(batch_size, num_workers, context_length, stride, max_tokens)
        if tokenizer.token_to_id(ENDOFTEXT) is None:
            raise DataError(
                f"the tokenizer has no {ENDOFTEXT} token, which separates documents in a language "
                "model's stream: use a GPT-style tokenizer (or train one: tokenizer=bpe)"
            )
        self.context_length = context_length
        self.stride = stride
        self.shuffle = shuffle
        self.cache_dir = cache_dir
        self.num_proc = num_proc
        self.encoder = encoder
        self.max_tokens = max_tokens

    @staticmethod
    def check_arguments(
        batch_size: int = 32,
        num_workers: int = 0,
        context_length: int = 64,
        stride: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """Refuse impossible settings by their argument's name, before the corpus is encoded (which
        can take minutes) and before anything is built (the preflight calls it)."""
        TextDataModule.check_arguments(batch_size, num_workers)
        if context_length < 1:
            raise ArgumentError("context_length", f"{context_length} < 1", "use a positive length")
        if stride is not None and stride > context_length:  # tokens between windows never trained on
            raise ArgumentError(
                "stride", f"{stride} > context_length={context_length}", "use 1..context_length, or null"
            )
        if max_tokens is not None and max_tokens < context_length + 1:
            raise ArgumentError(
                "max_tokens",
                f"{max_tokens} training tokens are fewer than one window of context_length + 1 = "
                f"{context_length + 1}",
                f"raise max_tokens to at least {context_length + 1}, or null for no cap",
            )

    def prepared(self) -> PreparedCorpus:
        """The corpus's ids for this tokenizer: from the cache, or encoded now (once)."""
        return prepare(
            self.corpus.train_documents(),
            self.corpus.val_documents(),
            self.tokenizer,
            fingerprint=self.corpus.fingerprint(),
            cache_dir=self.cache_dir or tempfile.mkdtemp(prefix="llm_lab_ids_"),
            num_proc=self.num_proc,
            encoder=self.encoder,
            max_tokens=self.max_tokens,
            total_bytes=self.corpus.size_in_bytes(),
            progress=True,  # a bar on a terminal, else a line every 10 s and at the end
        )

    def build(self) -> None:
        ids = self.prepared()
        self.train_set = TokenWindows(ids.train, self.context_length, self.stride)
        # Validation windows never overlap each other, so every validation token is scored once.
        self.val_set = TokenWindows(ids.val, self.context_length, self.context_length)

    def train_dataloader(self) -> DataLoader:
        # drop_last keeps batch shapes fixed, unless that would leave no batch at all.
        drop_last = len(self.train_set) >= self.batch_size * rank_and_world()[1]
        return ResumableLoader(
            self.train_set, self.batch_size, self.shuffle, self.seed, drop_last, self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        sampler = EveryItemOnce(self.val_set)  # under DDP: each window on one rank, none twice
        return DataLoader(self.val_set, self.batch_size, sampler=sampler, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        # The validation documents again: the corpus is split in two, not three (see data/cbow.py).
        return self.val_dataloader()

    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.tokenizer.vocab_size}

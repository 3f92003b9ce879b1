"""Language-model data: documents → the run's tokenizer → one id stream → next-token windows.

Documents are joined with ``<|endoftext|>`` (GPT-2's separator; Raschka ch. 2.4). Training ids come
first in the stream and validation ids after them; windows never cross that boundary (see
:class:`TokenWindows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from llm_lab.data.corpus import Split
from llm_lab.data.resumable import ResumableLoader, rank_and_world
from llm_lab.data.text import TextDataModule
from llm_lab.data.windows import TokenWindows, id_dtype, write_ids
from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT


class LMDataModule(TextDataModule):
    """Next-token windows of ``context_length`` ids, ``stride`` apart (``None``: no overlap).

    ``ids_dir`` streams the ids to ``<ids_dir>/ids.bin`` and memory-maps them (corpora larger than
    memory). ``model_kwargs()`` hands the model its ``vocab_size``.
    """

    def __init__(
        self,
        corpus: Split,
        tokenizer: Tokenizer,
        context_length: int = 64,
        stride: int | None = None,
        ids_dir: str | None = None,
        shuffle: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(corpus, tokenizer, batch_size, num_workers, seed)
        if context_length < 1:
            raise ArgumentError("context_length", f"{context_length} < 1", "use a positive length")
        eot = tokenizer.token_to_id(ENDOFTEXT)
        if eot is None:
            raise DataError(
                f"the tokenizer has no {ENDOFTEXT} token, which separates documents in a language "
                "model's stream: use a GPT-style tokenizer (or train one: tokenizer=bpe)"
            )
        self.eot_id = eot
        self.context_length = context_length
        self.stride = stride
        self.ids_dir = ids_dir
        self.shuffle = shuffle

    def build(self, train_docs: list[str], val_docs: list[str]) -> None:
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
        return {"vocab_size": self.tokenizer.vocab_size}

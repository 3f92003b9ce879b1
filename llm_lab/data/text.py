"""The DataModule base every text stage shares: it receives the run's corpus and tokenizer.

``train.py`` describes the corpus (``llm_lab.data.corpus``) and builds the tokenizer
(``llm_lab.tokenizers.build``) before any DataModule exists, then hands both in; a subclass turns
the corpus's training and validation documents into its own examples (CBoW pairs, LM windows, ...)
in :meth:`TextDataModule.build`. In a notebook: ``LMDataModule(Corpus(), tok, context_length=64)``.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from llm_lab.data.corpus import Corpus
from llm_lab.errors import ArgumentError
from llm_lab.tokenizers.base import Tokenizer


class TextDataModule(L.LightningDataModule):
    """Builds its datasets once from ``corpus`` with ``tokenizer``; ``seed`` orders the training
    examples of every epoch."""

    def __init__(
        self, corpus: Corpus, tokenizer: Tokenizer, batch_size: int = 64, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        TextDataModule.check_arguments(batch_size, num_workers)
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed  # seeds the order of the training examples in every epoch
        self._built = False

    @staticmethod
    def check_arguments(batch_size: int = 64, num_workers: int = 0) -> None:
        """Refuse impossible settings by their argument's name (also before anything is built)."""
        if batch_size < 1:
            raise ArgumentError("batch_size", f"{batch_size} < 1", "use a positive batch size")
        if num_workers < 0:
            raise ArgumentError("num_workers", f"{num_workers} < 0", "use 0 (the main process) or more")

    def setup(self, stage: str | None = None) -> None:
        # train.py calls setup("fit") before the Trainer does; build only once.
        if not self._built:
            self.build()
            self._built = True

    def build(self) -> None:
        """Turn the corpus's documents into the stage's datasets."""
        raise NotImplementedError

    def model_kwargs(self) -> dict[str, Any]:
        """What the LightningModule needs to know about the data (vocabulary size, ...)."""
        return {}

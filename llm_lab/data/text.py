"""The DataModule base every text stage shares: corpus source and train/validation split.

A subclass turns the two lists of documents into its own examples (CBoW pairs, LM windows, ...);
the keys that choose the text (``data.path``, ``data.hf_dataset``, ``data.val_fraction`` ...) are
the same for every stage because they are handled here once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from llm_lab.data.corpus import load_corpus, split_documents
from llm_lab.errors import ConfigError


class TextDataModule(L.LightningDataModule):
    """Loads the corpus once and splits it by document. Subclasses implement :meth:`build`."""

    def __init__(
        self,
        path: str | Path | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        hf_split: str = "train",
        hf_data_files: str | list[str] | None = None,
        text_column: str = "text",
        max_documents: int | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError("data.batch_size", f"{batch_size} < 1", "use a positive batch size")
        self.corpus_args: dict[str, Any] = dict(
            path=path,
            hf_dataset=hf_dataset,
            hf_config=hf_config,
            hf_split=hf_split,
            hf_data_files=hf_data_files,
            text_column=text_column,
            max_documents=max_documents,
        )
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._built = False

    def setup(self, stage: str | None = None) -> None:
        # train.py calls setup("fit") before the Trainer does; build only once.
        if self._built:
            return
        docs = load_corpus(**self.corpus_args)
        train_docs, val_docs = split_documents(docs, self.val_fraction, self.seed)
        self.build(train_docs, val_docs)
        self._built = True

    def build(self, train_docs: list[str], val_docs: list[str]) -> None:
        """Turn documents into the stage's datasets."""
        raise NotImplementedError

    def model_kwargs(self) -> dict[str, Any]:
        """What the LightningModule needs to know about the data (vocabulary size, ...)."""
        return {}


class _StepNumbers(IterableDataset):
    """0, 1, 2, ...: the "batches" of a stage that reads its documents itself and only needs to be
    told "do the next step" (BPE merges, building a vocabulary)."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


class DocumentsDataModule(TextDataModule):
    """The corpus as text, for stages that are not trained on batches (BPE, the simple tokenizer).

    The stage reads ``train_docs`` itself; the training loader yields step numbers without end (the
    stage stops the run when it is done); a validation "batch" is the list of validation documents.
    """

    def build(self, train_docs: list[str], val_docs: list[str]) -> None:
        if not val_docs:
            raise ConfigError(
                "data.val_fraction",
                "no validation documents to measure the tokenizer on",
                "use a val_fraction > 0 and a corpus of several documents",
            )
        self.train_docs, self.val_docs = train_docs, val_docs

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_StepNumbers(), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        # A list is a map-style dataset; its one item is the whole list of documents.
        return DataLoader([self.val_docs], batch_size=None)  # type: ignore[arg-type]

"""Labelled texts for a classifier (Raschka ch. 6.2-6.3): read, split, balanced, tokenized, and
batched with dynamic padding.

The texts come from the built-in ``docs_topics`` set (:mod:`llm_lab.data.docs_topics`) or a user's
file (:mod:`llm_lab.data.labelled`). One file is split into train/val/test by a hash of each text
(a text lands in the same split whatever the file's order); ``val_path`` and ``test_path`` give the
splits instead. Labels are the training split's, sorted; a val or test label the training split
lacks is refused (the classifier could never predict it).

Texts are cut to ``max_length`` tokens, and each batch is padded (on the right, with the pad id)
only to its own longest text: ch. 6 pads every text to the longest of the data set, which makes
short texts cost as much as the longest one.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from llm_lab.data.docs_topics import docs_topics, split_by_module
from llm_lab.data.labelled import Rows, read_labelled
from llm_lab.errors import ArgumentError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT

log = logging.getLogger(__name__)
BALANCES = ("none", "undersample", "class_weights")
SPLITS = ("train", "val", "test")
Batch = tuple[Tensor, Tensor, Tensor]  # ids (B, T), lengths (B,), labels (B,)


def hash_split(rows: Rows, seed: int, val_fraction: float, test_fraction: float) -> dict[str, Rows]:
    """Train/val/test rows by a hash of (seed, text): a text's split does not depend on the order."""
    splits: dict[str, Rows] = {name: [] for name in SPLITS}
    for text, label in rows:
        share = int(hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()[:8], 16) / 16**8
        name = "test" if share < test_fraction else "val" if share < test_fraction + val_fraction else "train"
        splits[name].append((text, label))
    return splits


def undersample(rows: Rows, seed: int) -> Rows:
    """Every class cut to the size of the rarest, at random (Raschka 6.2 balances spam this way)."""
    by_label: dict[str, Rows] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    smallest = min(map(len, by_label.values()))
    rng = random.Random(seed)
    kept = [row for label in sorted(by_label) for row in rng.sample(by_label[label], smallest)]
    rng.shuffle(kept)
    return kept


def pad_batch(examples: list[tuple[list[int], int]], pad_id: int) -> Batch:
    """(ids, label) examples as one batch, padded on the right to its longest text (dynamic padding)."""
    longest = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    for row, (tokens, _) in enumerate(examples):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    lengths = torch.tensor([len(tokens) for tokens, _ in examples])
    return ids, lengths, torch.tensor([label for _, label in examples])


class ClassifyDataModule(L.LightningDataModule):
    """Labelled texts as padded batches of (ids, lengths, labels). ``path=None``: the built-in
    ``docs_topics``. ``balance``: ``none``, ``undersample`` (the training split) or
    ``class_weights`` (the loss weighs each class by n / (classes · count))."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        path: str | None = None,
        text_column: str | int = "text",
        label_column: str | int = "label",
        val_path: str | None = None,
        test_path: str | None = None,
        hf_split: str = "train",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_length: int = 128,
        balance: str = "none",
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        ClassifyDataModule.check_arguments(val_fraction, test_fraction, max_length, balance, batch_size)
        self.tokenizer, self.path, self.hf_split = tokenizer, path, hf_split
        self.columns = (text_column, label_column)
        self.paths = {"val": val_path, "test": test_path}
        self.fractions = (val_fraction, test_fraction)
        self.max_length, self.balance, self.seed = max_length, balance, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.rows: dict[str, Rows] = {}
        self.labels: list[str] = []
        self.encoded: dict[str, list[tuple[list[int], int]]] = {}
        self.truncated = 0

    @staticmethod
    def check_arguments(
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_length: int = 128,
        balance: str = "none",
        batch_size: int = 32,
    ) -> None:
        """Refuse impossible settings by their argument's name (also before anything is read)."""
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            fix = "e.g. val_fraction=0.1 test_fraction=0.1 (their sum below 1)"
            raise ArgumentError(
                "val_fraction", f"{val_fraction} and {test_fraction} leave no training split", fix
            )
        if max_length < 1:
            raise ArgumentError("max_length", f"{max_length} < 1", "e.g. max_length=128")
        if balance not in BALANCES:
            raise ArgumentError("balance", f"unknown value {balance!r}", f"use one of {', '.join(BALANCES)}")
        if batch_size < 1:
            raise ArgumentError("batch_size", f"{batch_size} < 1", "use a positive batch size")

    @property
    def pad_id(self) -> int:
        """What fills the batches' ends: ``<|endoftext|>``, as GPT-2 pads (id 0 without one)."""
        return self.tokenizer.token_to_id(ENDOFTEXT) or 0

    def read(self) -> dict[str, Rows]:
        """The rows of every split, before balancing."""
        if self.path is None:
            built_in = split_by_module(docs_topics())
            return {name: [(e.text, e.label) for e in built_in[name]] for name in SPLITS}
        text_column, label_column = self.columns
        rows = read_labelled(self.path, text_column, label_column, self.hf_split)
        carved = hash_split(rows, self.seed, *self.fractions)
        splits = {"train": carved["train"]}
        for name in ("val", "test"):
            given = self.paths[name]
            splits[name] = read_labelled(given, text_column, label_column) if given else carved[name]
            if given:  # the rows carved for this split train instead
                splits["train"] += carved[name]
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:  # train.py calls setup("fit") before the Trainer does: read once
            return
        self.rows = self.read()
        seen = Counter(label for _, label in self.rows["train"])
        if len(seen) < 2:
            source = self.path or "docs_topics"
            raise ArgumentError(
                "label_column", f"{source}: the training split holds one label ({', '.join(seen)})",
                "give a column with two labels or more",
            )  # fmt: skip
        self.labels = sorted(seen)
        for name in ("val", "test"):
            unseen = sorted({label for _, label in self.rows[name]} - set(seen))
            if unseen:
                raise ArgumentError(
                    f"{name}_path" if self.paths[name] else "label_column",
                    f"label {unseen[0]!r} of the {name} split never occurs in the training split",
                    "every label needs training examples: add some, or drop those rows",
                )
        if self.balance == "undersample":
            self.rows["train"] = undersample(self.rows["train"], self.seed)
        index = {label: i for i, label in enumerate(self.labels)}
        self.truncated = 0
        for name in SPLITS:
            self.encoded[name] = []
            for text, label in self.rows[name]:
                ids = self.tokenizer.encode(text)
                self.truncated += len(ids) > self.max_length
                self.encoded[name].append((ids[: self.max_length], index[label]))
        total = sum(map(len, self.encoded.values()))
        log.info(
            f"{total:,} texts ({', '.join(f'{n} {len(self.encoded[n]):,}' for n in SPLITS)}), "
            f"{len(self.labels)} classes; {self.truncated:,} cut to max_length={self.max_length} tokens"
        )

    def class_weights(self) -> list[float] | None:
        """n / (classes · count) per class with ``balance=class_weights`` (sklearn's "balanced")."""
        if self.balance != "class_weights":
            return None
        counts = Counter(label for _, label in self.encoded["train"])
        n = len(self.encoded["train"])
        return [n / (len(self.labels) * counts[i]) for i in range(len(self.labels))]

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "vocab_size": self.tokenizer.vocab_size,
            "max_length": self.max_length,
            "class_weights": self.class_weights(),
        }

    def collate(self, examples: list[tuple[list[int], int]]) -> Batch:
        return pad_batch(examples, self.pad_id)

    def _loader(self, name: str) -> DataLoader:
        shuffle = name == "train"
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.encoded[name],  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

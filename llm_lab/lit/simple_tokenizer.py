"""The simple tokenizer as a stage: ``python train.py experiment=simple_tokenizer`` (Raschka, ch. 2.2–2.4).

Nothing is learned by gradient descent: the one training step builds the vocabulary from the
training documents. What a learner watches in TensorBoard is what the chapter discusses: how large
the vocabulary is, how often validation text hits a word it has never seen (``<|unk|>``), and what
encode → decode does to a few sentences (spaces before punctuation, unknown words).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from llm_lab.lit.base import OptimizerFactory, SchedulerFactory
from llm_lab.lit.scratch import HandWrittenModule
from llm_lab.tokenizers.simple import UNK, SimpleTokenizer


class SimpleTokenizerStage(HandWrittenModule):
    """Builds a :class:`SimpleTokenizer` (V2: ``<|unk|>``, ``<|endoftext|>``) in one step.

    Logs ``train/vocab_size``, ``val/unk_rate`` (share of validation tokens that are unknown) and
    ``val/tokens``; writes ``vocab.json`` (id → token) to the run directory and a few encode →
    decode round trips as TensorBoard text.
    """

    vocab_built: torch.Tensor

    def __init__(
        self,
        min_count: int = 1,
        max_vocab_size: int | None = None,
        lowercase: bool = False,
        n_examples: int = 3,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.min_count, self.max_vocab_size, self.lowercase = min_count, max_vocab_size, lowercase
        self.n_examples = n_examples
        # The step counter's optimizer needs one tensor to hold: the vocabulary size once built.
        self.register_buffer("vocab_built", torch.zeros((), dtype=torch.long))
        self.tokenizer: SimpleTokenizer | None = None

    def training_step(self, batch: int, batch_idx: int) -> None:
        datamodule: Any = self.trainer.datamodule  # type: ignore[attr-defined]

        def build(lr: float) -> SimpleTokenizer:
            return SimpleTokenizer.from_corpus(
                datamodule.train_docs,
                lowercase=self.lowercase,
                min_count=self.min_count,
                max_size=self.max_vocab_size,
            )

        self.tokenizer = self.hand_written_step(build)
        self.vocab_built.fill_(self.tokenizer.vocab_size)
        self.log("train/vocab_size", float(self.tokenizer.vocab_size))
        self.trainer.should_stop = True  # one step builds the whole vocabulary

    def validation_step(self, batch: list[str], batch_idx: int) -> None:
        if self.tokenizer is None:
            return
        ids = [i for doc in batch for i in self.tokenizer.encode(doc)]
        unk = self.tokenizer.vocab.stoi[UNK]
        self.log("val/unk_rate", sum(i == unk for i in ids) / max(len(ids), 1), batch_size=len(batch))
        self.log("val/tokens", float(len(ids)), batch_size=len(batch))

    def on_train_end(self) -> None:
        if self.tokenizer is None or not self.trainer.is_global_zero:
            return
        (self.run_dir / "vocab.json").write_text(
            json.dumps(dict(enumerate(self.tokenizer.vocab.itos)), ensure_ascii=False, indent=0)
        )
        datamodule: Any = self.trainer.datamodule  # type: ignore[attr-defined]
        rows = []
        for doc in datamodule.val_docs[: self.n_examples]:
            sentence = " ".join(doc.split()[:25])
            ids = self.tokenizer.encode(sentence)
            rows.append(f"| {sentence} | {ids[:25]} | {self.tokenizer.decode(ids)} |")
        table = "| text | ids | decode(encode(text)) |\n|---|---|---|\n" + "\n".join(rows)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("tokenizer/round_trips", table, self.global_step)

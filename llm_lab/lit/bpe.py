"""BPE training as a stage of the lab: ``python train.py experiment=bpe`` (Raschka, ch. 2.5).

Byte-pair encoding is not learned by gradient descent, but it enters through ``train.py`` like
every stage, with the same corpus keys, loggers and run directory. One training step performs
``model.merges_per_step`` merges of the incremental merge loop
(:class:`~llm_lab.tokenizers.bpe_fast.BPETrainer`), so ``trainer.max_steps=N`` stops after N blocks of
merges; without it, training ends when the vocabulary reaches ``model.vocab_size`` (or no pair
is left to merge). The run directory receives ``tokenizer.json`` (HF format), and TensorBoard
shows the vocabulary growing, the frequency of each new merge falling (Zipf), the training time,
and the compression (UTF-8 bytes per token) of the validation documents improving.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from llm_lab.errors import ConfigError, DataError
from llm_lab.lit.base import OptimizerFactory, SchedulerFactory
from llm_lab.lit.scratch import HandWrittenModule
from llm_lab.tokenizers.bpe import check_special_tokens, check_vocab_size
from llm_lab.tokenizers.bpe_fast import BPETrainer, FastBPETokenizer
from llm_lab.tokenizers.formats import token_to_str
from llm_lab.tokenizers.pretokenize import count_corpus


class BPETraining(HandWrittenModule):
    """Trains a byte-level BPE tokenizer, ``merges_per_step`` merges per training step.

    Logs ``train/vocab_size``, ``train/merge_frequency`` (how often the last merged pair occurred
    in the corpus), ``train/elapsed_sec`` and, at each validation (every
    ``trainer.val_check_interval`` steps, and at the end), ``val/bytes_per_token``. The optimizer
    is only Lightning's step counter here (see :class:`~llm_lab.lit.scratch.HandWrittenUpdate`);
    its learning rate means nothing to BPE. The merge state lives in Python objects, not in the
    state dict, so a checkpoint cannot resume a BPE run (the experiment writes none).
    """

    merges_done: torch.Tensor

    def __init__(
        self,
        vocab_size: int = 1000,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        merges_per_step: int = 10,
        num_workers: int | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        special_tokens = list(special_tokens)
        check_special_tokens(special_tokens)
        check_vocab_size(vocab_size, special_tokens)
        if not isinstance(merges_per_step, int) or merges_per_step < 1:
            raise ConfigError("model.merges_per_step", f"{merges_per_step!r} is not a positive integer")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.vocab_size, self.special_tokens = vocab_size, special_tokens
        self.merges_per_step = merges_per_step
        self.num_workers = num_workers
        # Merges done so far, as a buffer: the step counter's optimizer needs one tensor to hold.
        self.register_buffer("merges_done", torch.zeros((), dtype=torch.long))
        self.bpe: BPETrainer | None = None

    def on_fit_start(self) -> None:
        datamodule: Any = self.trainer.datamodule  # type: ignore[attr-defined]
        self._start = time.perf_counter()
        counts = count_corpus(
            documents=datamodule.train_docs, special_tokens=self.special_tokens, num_workers=self.num_workers
        )
        if not counts:
            raise DataError("the training documents are empty: nothing to learn merges from")
        self.bpe = BPETrainer(counts, self.special_tokens)

    def tokenizer(self) -> FastBPETokenizer:
        """The tokenizer learned so far."""
        assert self.bpe is not None, "fit() first: the merges are learned in training steps"
        return FastBPETokenizer(self.bpe.vocab, self.bpe.merges, self.special_tokens)

    def validation_step(self, batch: list[str], batch_idx: int) -> None:
        """UTF-8 bytes per token on the validation documents (higher: better compression)."""
        tokenizer = self.tokenizer()
        n_bytes = sum(len(doc.encode("utf-8")) for doc in batch)
        n_tokens = sum(len(tokenizer.encode(doc)) for doc in batch)
        self.log("val/bytes_per_token", n_bytes / max(n_tokens, 1), batch_size=len(batch))

    def training_step(self, batch: int, batch_idx: int) -> None:
        assert self.bpe is not None
        bpe = self.bpe
        todo = min(self.merges_per_step, self.vocab_size - len(bpe.vocab))
        done = self.hand_written_step(lambda lr: bpe.merge(todo))
        self.merges_done += done
        self.log("train/vocab_size", float(len(bpe.vocab)))
        if bpe.merge_counts:
            self.log("train/merge_frequency", float(bpe.merge_counts[-1]))
        self.log("train/elapsed_sec", time.perf_counter() - self._start)
        complete = done < todo or len(bpe.vocab) >= self.vocab_size
        max_steps = self.trainer.max_steps
        # Asking to stop (rather than running into max_steps) makes Lightning validate once more.
        if complete or (max_steps > 0 and self.global_step >= max_steps):
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.tokenizer().save(self.run_dir / "tokenizer.json")
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                assert self.bpe is not None
                rows = [
                    f"| {i + 1} | `{token_to_str(a)}` + `{token_to_str(b)}` | {count} |"
                    for i, ((a, b), count) in enumerate(
                        zip(self.bpe.merges[:50], self.bpe.merge_counts, strict=False)
                    )
                ]
                table = "| rank | merge | pair count |\n|---|---|---|\n" + "\n".join(rows)
                logger.experiment.add_text("bpe/first_merges", table, self.global_step)

"""The CBoW objective as a LightningModule: train word vectors, evaluate them, write vectors.txt."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_lab.eval.word_vectors import word_analogies, word_similarity
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory
from llm_lab.models.cbow import CBoW, save_word2vec_text
from llm_lab.tokenizers.simple import Vocabulary


class CBoWModule(LabModule):
    """Wraps :class:`~llm_lab.models.cbow.CBoW`.

    Logs ``train/loss``, ``train/words_per_sec`` (raw corpus words, as gensim counts them),
    ``val/loss``; with evaluation files configured, ``val/wordsim_spearman`` every validation and,
    in the test stage, ``test/wordsim_spearman``, ``test/analogy_accuracy`` and their OOV counts.
    At the end of fitting it writes ``vectors.txt`` (word2vec text format) to the run directory.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        embed_dim: int = 100,
        loss: str = "negative_sampling",
        negatives: int = 5,
        noise_power: float = 0.75,
        similarity_file: str | None = None,
        analogy_file: str | None = None,
        raw_words_per_example: float = 1.0,
        tokenizer: Any = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["vocab", "tokenizer", "optimizer", "scheduler"], logger=False)
        self.tokenizer = tokenizer  # the run's tokenizer (CBoW's own vocabulary is ``vocab``)
        self.vocab = vocab
        self.net = CBoW(len(vocab), embed_dim, loss, negatives, vocab.counts, noise_power)
        self.similarity_file = similarity_file
        self.analogy_file = analogy_file
        self.raw_words_per_example = raw_words_per_example
        self._tick = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        context, centre = batch
        loss = self.net(context, centre)
        now = time.perf_counter()
        words_per_sec = len(centre) * self.raw_words_per_example / max(now - self._tick, 1e-9)
        self._tick = now
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/words_per_sec", words_per_sec, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self._tick = time.perf_counter()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.net(*batch), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", self.net(*batch))

    def on_validation_epoch_end(self) -> None:
        if self.similarity_file and not self.trainer.sanity_checking:
            self.log("val/wordsim_spearman", self.evaluate()["wordsim_spearman"])

    def on_test_epoch_end(self) -> None:
        for name, value in self.evaluate(analogies=True).items():
            self.log(f"test/{name}", value)

    def evaluate(self, analogies: bool = False) -> dict[str, float]:
        """Word-similarity (and analogy) scores of the current vectors on the configured files."""
        metrics: dict[str, float] = {}
        words, vectors = self.word_table()
        if self.similarity_file:
            sim = word_similarity(words, vectors, self.similarity_file)
            metrics.update(wordsim_spearman=sim.score, wordsim_oov=float(sim.n_skipped))
        if analogies and self.analogy_file:
            ana = word_analogies(words, vectors, self.analogy_file)
            metrics.update(analogy_accuracy=ana.score, analogy_oov=float(ana.n_skipped))
        return metrics

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            self.export(self.run_dir / "vectors.txt")

    def word_table(self) -> tuple[list[str], np.ndarray]:
        """The vocabulary and its vectors (row i is word i), as float32 numpy."""
        return self.vocab.itos, self.net.word_vectors.float().cpu().numpy()

    def export(self, path: Path) -> None:
        save_word2vec_text(path, *self.word_table())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The vocabulary is part of the model: without it the vectors mean nothing.
        checkpoint["vocab"] = {"itos": self.vocab.itos, "counts": self.vocab.counts}

"""The CBoW objective as a LightningModule: train word vectors, evaluate them, write vectors.txt."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_lab.eval.word_vectors import MIN_COVERAGE, MIN_ITEMS, word_analogies, word_similarity
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory
from llm_lab.models.cbow import CBoW, save_word2vec_text
from llm_lab.tokenizers.simple import Vocabulary

log = logging.getLogger(__name__)


class CBoWModule(LabModule):
    """Wraps :class:`~llm_lab.models.cbow.CBoW`.

    Logs ``train/loss``, ``train/words_per_sec`` (raw corpus words, as gensim counts them),
    ``val/loss``; with evaluation files configured, ``val/wordsim_coverage`` (and
    ``val/wordsim_spearman`` when the coverage allows a score) every validation and, in the test
    stage, the same for word similarity and analogies (``test/analogy_accuracy``).
    At the end of fitting it writes ``vectors.txt`` (word2vec text format) to the run directory.
    """

    LOGGED = (
        *("train/loss", "train/words_per_sec", "val/loss", "test/loss"),
        *(f"{stage}/wordsim_{name}" for stage in ("val", "test") for name in ("coverage", "spearman")),
        *(f"test/analogy_{name}" for name in ("coverage", "accuracy")),
    )

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
        context_size: int = 10,
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
        # One example (context ids, centre id): Lightning's model summary runs it to count FLOPs.
        self.example_input_array = (
            torch.zeros(1, context_size, dtype=torch.long),
            torch.zeros(1, dtype=torch.long),
        )
        self._warned: set[str] = set()
        self._tick = time.perf_counter()

    def forward(self, context: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """The CBoW loss of a batch."""
        return self.net(context, centre)

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
        # sync_dist: the epoch's mean over every DDP rank, so all ranks (and checkpoints) agree.
        self.log("val/loss", self.net(*batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", self.net(*batch), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.similarity_file and not self.trainer.sanity_checking:
            self.log_dict({f"val/{k}": v for k, v in self.evaluate().items()})

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{k}": v for k, v in self.evaluate(analogies=True).items()})

    def evaluate(self, analogies: bool = False) -> dict[str, float]:
        """Word-similarity (and analogy) scores of the current vectors on the configured files.

        Each evaluation reports its coverage (the share of its items whose words are in the
        vocabulary); its score only when enough items were scored to mean something
        (``llm_lab.eval.word_vectors.MIN_COVERAGE`` / ``MIN_ITEMS``), and otherwise says so once.
        """
        metrics: dict[str, float] = {}
        words, vectors = self.word_table()
        results = {}
        if self.similarity_file:
            results["wordsim"] = ("spearman", word_similarity(words, vectors, self.similarity_file))
        if analogies and self.analogy_file:
            results["analogy"] = ("accuracy", word_analogies(words, vectors, self.analogy_file))
        for name, (score_name, result) in results.items():
            metrics[f"{name}_coverage"] = result.coverage
            if result.meaningful:
                metrics[f"{name}_{score_name}"] = result.score
            elif name not in self._warned:
                self._warned.add(name)
                log.warning(
                    f"{name}: only {result.n_used} of {result.n_used + result.n_skipped} items have all "
                    f"their words in the vocabulary ({result.coverage:.0%}); no score below "
                    f"{MIN_COVERAGE:.0%} and {MIN_ITEMS} items: train on a larger corpus for one "
                    "(README: Word vectors on a larger corpus)"
                )
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

"""The CBoW objective as a LightningModule: train word vectors, evaluate them, write vectors.txt."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_lab.errors import ConfigError
from llm_lab.eval.word_vectors import MIN_COVERAGE, MIN_ITEMS, word_analogies, word_similarity
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory, is_logging_step
from llm_lab.lit.scratch import HandWrittenUpdate, check_hand_written, hand_written_step
from llm_lab.models.cbow import CBoW, mean_pair_cosine, save_word2vec_text
from llm_lab.tokenizers.simple import Vocabulary

log = logging.getLogger(__name__)
DEFAULT_LR = 0.05  # word2vec's SGD step without an optimizer given (conf/experiment/cbow.yaml)


def is_hand_written(optimizer: OptimizerFactory | None) -> bool:
    """Whether the optimizer partial is :class:`HandWrittenUpdate`: word2vec's own SGD."""
    return getattr(optimizer, "func", optimizer) is HandWrittenUpdate


class CBoWModule(LabModule):
    """Wraps :class:`~llm_lab.models.cbow.CBoW`, trained one of two ways, chosen by the optimizer:

    - ``llm_lab.lit.scratch.HandWrittenUpdate`` (``experiment=cbow``, and the default): word2vec's
      SGD written out (``CBoW.sgd_step``), under Lightning's manual optimisation; the optimizer
      carries the learning rate, which the scheduler decays linearly as word2vec does.
    - any ``torch.optim`` optimizer (``optimizer=adamw``): autograd on ``CBoW.forward``.

    Logs ``train/loss``, ``train/words_per_sec`` (raw corpus words, as gensim counts them),
    ``val/loss``, ``val/mean_cosine`` (the mean cosine between two random words: near 1, the vectors
    share one direction and nearest neighbours mean little); with evaluation files configured,
    ``val/wordsim_coverage`` (and ``val/wordsim_spearman`` when the coverage allows a score) every
    validation and, in the test stage, the same for word similarity and analogies
    (``test/analogy_accuracy``).
    At the end of fitting it writes ``vectors.txt`` (word2vec text format) to the run directory.
    """

    LOGGED = (
        *(
            "train/loss",
            "train/words_per_sec",
            "val/loss",
            "test/loss",
            "val/mean_cosine",
            "test/mean_cosine",
        ),
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
        hand_written = optimizer is None or is_hand_written(optimizer)
        super().__init__(optimizer or partial(HandWrittenUpdate, lr=DEFAULT_LR), scheduler)
        # Lightning leaves the step to training_step: the hand-written rule updates the tables.
        self.automatic_optimization = not hand_written
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
        self._tick, self._words = time.perf_counter(), 0.0  # words/s since the last logged step

    def forward(self, context: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """The CBoW loss of a batch."""
        return self.net(context, centre)

    def setup(self, stage: str) -> None:
        if not self.automatic_optimization and self.trainer.world_size > 1:
            # Each process would update its own copy of the tables (no gradients to average).
            raise ConfigError(
                "trainer.strategy",
                "word2vec's hand-written SGD (HandWrittenUpdate) trains in one process",
                "drop trainer=ddp*, or train by autograd: "
                "optimizer=adamw optimizer.lr=1e-2 optimizer.weight_decay=0",
            )

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        if not self.automatic_optimization:
            check_hand_written(optimizer)
        elif isinstance(optimizer, HandWrittenUpdate):
            # Built by something other than a partial of it: autograd would step an optimizer
            # that updates nothing.
            raise ConfigError(
                "optimizer",
                "HandWrittenUpdate must be given as functools.partial(HandWrittenUpdate, lr=...)",
                "pass the partial (Hydra's _partial_: true), so the module runs word2vec's update",
            )
        return config

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        context, centre = batch
        if self.automatic_optimization:
            loss = self.net(context, centre)
        else:
            loss = hand_written_step(self, lambda lr: self.net.sgd_step(context, centre, lr))
        self._words += len(centre) * self.raw_words_per_example
        # This step's number: the hand-written update has already counted it, autograd's has not.
        step = self.trainer.global_step + int(self.automatic_optimization)
        # Only where the loggers write: each self.log is Python bookkeeping in Lightning that costs
        # more than a word2vec step on a small batch (see llm_lab/lit/lm.py).
        if is_logging_step(self.trainer, step):
            now = time.perf_counter()
            self.log("train/loss", loss)
            self.log("train/words_per_sec", self._words / max(now - self._tick, 1e-9))
            self._tick, self._words = now, 0.0
        return loss

    def on_train_epoch_start(self) -> None:
        self._tick, self._words = time.perf_counter(), 0.0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        # sync_dist: the epoch's mean over every DDP rank, so all ranks (and checkpoints) agree.
        self.log("val/loss", self.net(*batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", self.net(*batch), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log_dict({f"val/{k}": v for k, v in self.evaluate().items()})

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{k}": v for k, v in self.evaluate(analogies=True).items()})

    def evaluate(self, analogies: bool = False) -> dict[str, float]:
        """The mean cosine between random words, and word-similarity (and analogy) scores of the
        current vectors on the configured files.

        Each evaluation reports its coverage (the share of its items whose words are in the
        vocabulary); its score only when enough items were scored to mean something
        (``llm_lab.eval.word_vectors.MIN_COVERAGE`` / ``MIN_ITEMS``), and otherwise says so once.
        """
        words, vectors = self.word_table()
        metrics = {"mean_cosine": mean_pair_cosine(vectors)}
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
        super().on_save_checkpoint(checkpoint)
        # The vocabulary is part of the model: without it the vectors mean nothing.
        checkpoint["vocab"] = {"itos": self.vocab.itos, "counts": self.vocab.counts}

"""TensorBoard views of word vectors: nearest neighbours of probe words, and the projector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from llm_lab.eval.word_vectors import nearest_neighbours
from llm_lab.loggers import markdown_table


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class EmbeddingReport(L.Callback):
    """After each validation, log the ``k`` nearest neighbours of each probe word as text (by the
    cosine of the vectors, and of the mean-centred vectors); at the end of fitting, hand the
    ``projector_words`` most frequent vectors to TensorBoard's projector.

    The LightningModule must have ``word_table() -> (words, vectors)``, as the CBoW module does.
    """

    def __init__(self, probe_words: Sequence[str] = (), k: int = 8, projector_words: int = 2000) -> None:
        self.probe_words = list(probe_words)
        self.k = k
        self.projector_words = projector_words

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        tb = _tensorboard(trainer)
        if tb is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        words, vectors = pl_module.word_table()
        # Mean-centred too (Mu & Viswanath 2018, "All-but-the-Top"): the direction every vector
        # shares says nothing about any word, yet it lifts every raw cosine towards 1.
        centred = vectors - vectors.mean(axis=0)
        rows = []
        for probe in self.probe_words:
            if probe not in words:
                rows.append((probe, "(not in the vocabulary)", ""))
                continue
            near = [
                ", ".join(f"{w} ({s:.2f})" for w, s in nearest_neighbours(words, table, probe, self.k))
                for table in (vectors, centred)
            ]
            rows.append((probe, near[0], near[1]))
        if rows:
            header = ("probe", "nearest neighbours (cosine)", "by the cosine of mean-centred vectors")
            table = markdown_table(header, rows)
            tb.experiment.add_text("embeddings/nearest_neighbours", table, trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        tb = _tensorboard(trainer)
        if tb is None or not trainer.is_global_zero:
            return
        words, vectors = pl_module.word_table()
        n = min(self.projector_words, len(words))
        tb.experiment.add_embedding(
            torch.from_numpy(vectors[:n]),
            metadata=words[:n],
            global_step=trainer.global_step,
            tag="word_vectors",
        )
        tb.experiment.flush()

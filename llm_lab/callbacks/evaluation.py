"""Evaluation tasks while a GPT trains: ``eval/<task>/<metric>`` beside the loss curve.

The loss says the model fits its tokens; bits per byte on the validation split (a number that any
tokenizer shares), multiple-choice accuracy and cloze accuracy say what it can do, and when. This
callback runs the tasks of :mod:`llm_lab.eval.tasks` on the model being trained every
``every_n_steps`` optimizer steps and when training ends, and hands the metrics to every logger.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from llm_lab.callbacks.periodic import EveryNSteps
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.eval.scoring import LabLM, Scorer
from llm_lab.eval.tasks import Evaluation, task_name
from llm_lab.models.gpt import GPT

# The metrics of each kind of built-in task, as named in the loggers (eval/<task>/<metric>).
_TEXT = (
    "bits_per_byte",
    "nll_per_token",
    "perplexity",
    "tokens",
    "bytes",
    "unigram_bits_per_byte",
    "unk_share",
)
_METRICS = {
    "bpb": _TEXT,
    "docs_bpb": _TEXT,
    "docs_mc": ("acc", "acc_norm", "random_acc"),
    "docs_cloze": ("acc", "perplexity", "unigram_perplexity"),
}


class EvaluationTasks(EveryNSteps):
    """Every ``every_n_steps`` optimizer steps (and at the end), score ``tasks`` (names as
    ``evaluate.py`` takes them, e.g. ``[bpb, docs_mc]``), the first ``limit`` items of each.

    Needs a LightningModule with a ``tokenizer`` and a GPT ``net`` (``NextTokenLM``), and a
    DataModule with a ``corpus`` (whose validation split is ``bpb``)."""

    # What the built-in tasks can log: the names optimized_metric may take (the preflight reads them).
    LOGGED = tuple(f"eval/{task}/{metric}" for task, metrics in _METRICS.items() for metric in metrics)

    def __init__(
        self, tasks: list[str], every_n_steps: int = 100, limit: int | None = None, batch_size: int = 16
    ) -> None:
        super().__init__(every_n_steps)
        if not tasks:
            raise ArgumentError("tasks", "needs at least one task", "e.g. [bpb]")
        self.tasks, self.limit, self.batch_size = list(tasks), limit, batch_size
        self._evaluation: Evaluation | None = None

    def evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Evaluation:
        """The tasks' runner, made once: the unigram baseline is fitted on the first call only."""
        if self._evaluation is None:
            net: Any = getattr(pl_module, "net", None)
            tokenizer = getattr(pl_module, "tokenizer", None)
            corpus = getattr(getattr(trainer, "datamodule", None), "corpus", None)
            if not isinstance(net, GPT) or tokenizer is None or corpus is None:
                raise ConfigError(
                    "callbacks.evaluation", "needs a GPT trained on a corpus", "use it with experiment=gpt"
                )
            scorer = Scorer(LabLM(net), tokenizer, self.batch_size, pl_module.device)
            self._evaluation = Evaluation(scorer, corpus, limit=self.limit)
        return self._evaluation

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = self.evaluation(trainer, pl_module)
        net: Any = pl_module.net
        was_training = net.training
        net.eval()  # no dropout while scoring
        try:
            metrics = {
                f"eval/{task_name(spec)}/{metric}": value
                for spec in self.tasks
                for metric, value in evaluation.run(spec).items()
                if metric != "n"
            }
        finally:
            net.train(was_training)
        # Among the run's metrics too (metrics.json, and what optimized_metric may name for a sweep).
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

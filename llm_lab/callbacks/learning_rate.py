"""The learning rate as a curve: one per optimizer, named by it (``lr/AdamW``).

Lightning's ``LearningRateMonitor`` writes one curve per parameter group (``lr-AdamW/pg1``,
``lr-AdamW/pg2``): a GPT's two groups — matrices with weight decay, the rest without — give two
identical curves under names that say nothing. The schedule sets one rate per optimizer; the
groups differ in weight decay, not in rate. A group whose rate does differ gets a curve of its own
(``lr/AdamW/group1``), so nothing is hidden.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from llm_lab.lit.base import is_logging_step


def learning_rates(optimizers: list[Any]) -> dict[str, float]:
    """``{"lr/AdamW": 0.001}``: each optimizer's rate (its first parameter group's) under its class
    name, numbered when two optimizers share one, and any group with another rate after it."""
    names = [type(o).__name__ for o in optimizers]
    rates: dict[str, float] = {}
    for i, (name, optimizer) in enumerate(zip(names, optimizers, strict=True)):
        tag = f"lr/{name}" if names.count(name) == 1 else f"lr/{name}_{i}"
        first = float(optimizer.param_groups[0]["lr"])
        rates[tag] = first
        for g, group in enumerate(optimizer.param_groups[1:], start=1):
            if float(group["lr"]) != first:
                rates[f"{tag}/group{g}"] = float(group["lr"])
    return rates


class LearningRate(L.Callback):
    """Log the rate each optimizer step is about to use, on the steps the loggers write (every
    ``trainer.log_every_n_steps``), under the step it applies to; the last one also lands in the
    run's final metrics (``metrics.json``), as Lightning's monitor does."""

    def __init__(self) -> None:
        self._last_step = -1  # with gradient accumulation, several batches start the same step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.loggers or step == self._last_step or not is_logging_step(trainer, step):
            return
        self._last_step = step
        rates = learning_rates(trainer.optimizers)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in rates.items()})
        for logger in trainer.loggers:
            logger.log_metrics(rates, step=step)

"""A callback that reports every N optimizer steps and once more when training ends: the cadence of
text samples and of evaluation tasks."""

from __future__ import annotations

from typing import Any

import lightning as L

from llm_lab.errors import ArgumentError


class EveryNSteps(L.Callback):
    """Call :meth:`report` every ``every_n_steps`` optimizer steps and at the end of training, never
    twice for one step. ``global_step`` counts optimizer steps: with gradient accumulation it
    repeats across micro-batches, so only the micro-batch that completed the step reports."""

    def __init__(self, every_n_steps: int) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ArgumentError("every_n_steps", f"must be ≥ 1, got {every_n_steps}", "e.g. 100")
        self.every_n_steps = every_n_steps
        self._last_step = -1  # the step last reported

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def _report_once(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        self.report(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._report_once(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self._report_once(trainer, pl_module)

"""Training progress counted in optimizer steps: a bar on a terminal, plain lines in logs and CI.

Both show ``step/total`` — ``total`` is what bounds the run (``trainer.max_steps``, or the epochs'
steps: Lightning's ``estimated_stepping_batches``) — and the epoch only when epochs bound the run.
Counting from ``trainer.global_step`` keeps them right after a resume.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger("train")


def run_position(trainer: L.Trainer) -> tuple[str, int | None]:
    """``("step 50/500", 500)``, or ``("step 50/500 epoch 2/5", 500)`` when epochs bound the run;
    the total is None for a run bounded by neither (an endless iterable, a time budget)."""
    total = trainer.estimated_stepping_batches
    steps = None if math.isinf(total) else int(total)
    text = f"step {trainer.global_step}/{steps if steps is not None else '?'}"
    max_epochs = trainer.max_epochs or -1
    if max_epochs > 0 and (trainer.max_steps <= 0 or steps is not None and steps < trainer.max_steps):
        text += f" epoch {trainer.current_epoch + 1}/{max_epochs}"
    return text, steps


def metrics_text(trainer: L.Trainer, prefix: str) -> str:
    """The scalar metrics whose name starts with ``prefix``, as ``name=value`` pairs."""
    return " ".join(
        f"{k}={float(v):.4g}"
        for k, v in sorted(trainer.callback_metrics.items())
        if k.startswith(prefix) and v.numel() == 1
    )


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps over the whole run instead of batches per epoch."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        description, total = run_position(trainer)
        bar = self.train_progress_bar
        bar.reset(total=total)
        bar.n = bar.initial = trainer.global_step
        bar.set_description(description.split(" ", 2)[-1] if " epoch " in description else "train")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()


class LineProgress(L.Callback):
    """Log one line every ``every_n_steps`` optimizer steps and one per validation (to the console and
    the run's ``train.log``); ``train.py`` uses it instead of the bar when stdout is not a terminal."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._start = time.perf_counter()
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end at the same step: report it once.
        if step != self._last_step and (step % self.every_n_steps == 0 or step == 1):
            self._last_step = step
            self._log(trainer, run_position(trainer)[0], "train/")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, f"validation at step {trainer.global_step}", "val/")

    def _log(self, trainer: L.Trainer, what: str, prefix: str) -> None:
        metrics = metrics_text(trainer, prefix)
        if trainer.is_global_zero and metrics:  # nothing logged yet (e.g. per-epoch metrics): wait
            log.info(f"[{time.perf_counter() - self._start:7.1f}s] {what} {metrics}")

"""Quiet, line-based progress for logs and CI, where a redrawn progress bar turns into noise."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L


class LineProgress(L.Callback):
    """Print one line every ``every_n_steps`` optimizer steps and one per validation.

    ``train.py`` uses it instead of the TQDM bar whenever stdout is not a terminal.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or batch_idx == 0:
            self._print(trainer, f"epoch {trainer.current_epoch} step {step}", "train/")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._print(trainer, f"validation at step {trainer.global_step}", "val/")

    def _print(self, trainer: L.Trainer, what: str, prefix: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = " ".join(
            f"{k}={float(v):.4g}"
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith(prefix) and v.numel() == 1
        )
        elapsed = time.perf_counter() - self._start
        print(f"[{elapsed:7.1f}s] {what} {metrics}", file=sys.stdout, flush=True)

"""Stop a run whose loss became NaN or infinite, before a bad checkpoint is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from llm_lab.errors import DivergedError
from llm_lab.lit.base import is_logging_step
from llm_lab.lit.checkpoint_io import last_good


class FiniteLoss(L.Callback):
    """Watch the training loss of every step; on NaN/inf raise :class:`DivergedError`.

    Reading a loss on the CPU waits for the GPU to finish the step, so the check stays on the device:
    every step records, there, the first step whose loss was not finite (a few tiny kernels, no
    wait). The record is read on the steps the loggers write (which wait anyway), before any
    checkpoint is saved and when training ends: the exception then ends ``fit`` before that
    checkpoint is written, so the last checkpoint on disk is the last good one; ``train.py`` prints
    the message and exits with code 2.
    """

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # 0 while every loss was finite

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Manual-optimisation stages may return nothing ({} or None): then there is no loss to check.
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            first = self._first_bad
            if first is None:
                first = torch.zeros((), dtype=torch.long, device=loss.device)
            keep = torch.isfinite(loss.detach()) | (first != 0)
            self._first_bad = torch.where(keep, first, trainer.global_step)
        if is_logging_step(trainer, trainer.global_step):
            self.check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raise :class:`DivergedError` if a loss so far was not finite (waits for the device)."""
        step = int(self._first_bad) if self._first_bad is not None else 0
        if step > 0:
            self._first_bad = None
            # Only a file that was written: a save the guard stopped is named by Lightning already.
            folder = getattr(trainer.checkpoint_callback, "dirpath", None)
            last = last_good(Path(folder)) if folder else "none (no checkpoints are kept)"
            raise DivergedError(
                f"train/loss became NaN or infinite in step {step}; last good checkpoint: {last} "
                "(lower optimizer.lr or set trainer.gradient_clip_val, then resume with ckpt_path)"
            )

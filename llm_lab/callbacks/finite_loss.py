"""Stop a run whose loss became NaN or infinite, before a bad checkpoint is written."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from llm_lab.errors import DivergedError


class FiniteLoss(L.Callback):
    """Check the training loss after every step; on NaN/inf raise :class:`DivergedError`.

    The exception ends ``fit`` before any later checkpoint is saved, so the last checkpoint on disk
    is the last good one; ``train.py`` prints the message and exits with code 2.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Manual-optimisation stages may return nothing ({} or None): then there is no loss to check.
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not math.isfinite(float(loss.detach())):
            last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none yet"
            raise DivergedError(
                f"train/loss became {float(loss)} in step {trainer.global_step}; last good checkpoint: "
                f"{last} (lower optimizer.lr or set trainer.gradient_clip_val, then resume with ckpt_path)"
            )

"""Lightning's ModelCheckpoint, plus a last.ckpt written right after the final training step."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastStepCheckpoint(ModelCheckpoint):
    """Also write ``last.ckpt`` after the run's final training step.

    With ``every_n_train_steps``, a run that stops at ``max_steps`` between two periodic saves would
    otherwise lose its final steps. The save happens inside the training step's end, exactly where
    periodic checkpoints are written, so the loop state in it is the same kind: resuming from it with
    a larger ``max_steps`` continues the interrupted epoch with its next batch.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last_step = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        max_epochs = trainer.max_epochs or 0
        last_batch = trainer.is_last_batch and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs
        if (
            (last_step or last_batch)
            and self.save_last
            and self._last_global_step_saved != trainer.global_step
        ):
            # Private helpers of ModelCheckpoint (Lightning 2.x): the same path periodic saves take.
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

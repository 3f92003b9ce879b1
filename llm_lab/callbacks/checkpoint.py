"""Lightning's ModelCheckpoint with a ``last.ckpt`` that is always recent enough to resume from.

Besides Lightning's own schedule (every N steps, every epoch), ``last.ckpt`` is written
- right after the run's final training step (a run that stops at ``max_steps``, or when its time
  budget ``trainer.max_time`` runs out, between two periodic saves would otherwise lose its last
  steps);
- every ``every_minutes`` of training, so a slow CPU run always has a recent one;
- when the run is interrupted: on SIGINT (Ctrl-C) or SIGTERM (a cluster's pre-emption) the current
  step is finished, ``last.ckpt`` is saved and :class:`Interrupted` ends the run; ``train.py`` then
  prints where the checkpoint is and the command that resumes it. A second Ctrl-C stops at once.

Every save happens where Lightning writes its periodic checkpoints (at the end of a training batch,
or at the end of a validation), so the loop state in it resumes exactly: the resumed run continues
with the batch the interrupted one would have trained on next.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from llm_lab.errors import ArgumentError, Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` after the final step, every
    ``every_minutes`` of training (None: never by time) and on SIGINT/SIGTERM (see module doc)."""

    clock = staticmethod(time.monotonic)  # seconds; a test may give it another clock

    def __init__(self, *args: Any, every_minutes: float | None = 10.0, **kwargs: Any) -> None:
        kwargs.setdefault("save_last", True)
        # A run folder is one run's (llm_lab/app/run_folder.py: claim): a name that exists is this
        # run's older save, replaced. With Lightning's version counter a run resumed in a moved
        # folder (whose checkpoint remembers the old path) wrote last-v1.ckpt beside a stale last.ckpt.
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)
        if every_minutes is not None and every_minutes <= 0:
            raise ArgumentError(
                "every_minutes", f"must be > 0 or null, got {every_minutes}", "e.g. 30, or null for none"
            )
        self.every_minutes = every_minutes
        self._last_save_time = self.clock()
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._launcher: Any = None

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._signal = signum
        if self._launcher is not None:  # DDP processes this one started: they must stop too
            self._launcher.kill(signum)
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # Installed here, after Lightning's own SIGTERM handler (which would end the run at the next
        # batch without a checkpoint), and removed when training ends.
        self._launcher = trainer.strategy.launcher
        if self.save_last:
            for signum in SIGNALS:
                try:
                    self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
                except ValueError:  # not the main thread: signals cannot be caught here
                    return

    def _restore_handlers(self) -> None:
        # Before Lightning's teardown, which then restores the handlers it found when fit started.
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_handlers()

    def _interrupted(self, trainer: L.Trainer) -> bool:
        """Whether any process of the run received a signal (all of them must stop together)."""
        flag = self._signal is not None
        if trainer.world_size > 1:
            flag = bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
        return flag

    def _save_last(self, trainer: L.Trainer) -> None:
        if self._last_global_step_saved != trainer.global_step:
            # Private helpers of ModelCheckpoint (Lightning 2.x): the same path periodic saves take.
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_save_time = self.clock()

    def _stop_if_interrupted(self, trainer: L.Trainer) -> None:
        if not self._interrupted(trainer):
            return
        if trainer.global_step == 0:
            raise Interrupted(self._signal or signal.SIGINT, "at step 0: checkpoint saved to none")
        self._save_last(trainer)
        step = trainer.global_step
        where = f"at step {step}: checkpoint saved to {self.last_model_path}"
        raise Interrupted(self._signal or signal.SIGTERM, where, step)

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.save_last:
            return
        # The run's final step: max_steps reached, or a stop requested (e.g. trainer.max_time is up).
        last_step = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps or trainer.should_stop
        max_epochs = trainer.max_epochs or 0
        last_batch = trainer.is_last_batch and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs
        minutes = (self.clock() - self._last_save_time) / 60
        if last_step or last_batch or (self.every_minutes is not None and minutes >= self.every_minutes):
            self._save_last(trainer)
        self._stop_if_interrupted(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.save_last and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._stop_if_interrupted(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._last_save_time = self.clock()

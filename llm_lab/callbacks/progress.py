"""Training progress counted in optimizer steps: a bar on a terminal, plain lines in logs and CI.

Both show ``step/total`` — ``total`` is what bounds the run (``trainer.max_steps``, or the epochs'
steps: Lightning's ``estimated_stepping_batches``) — the epoch only when epochs bound the run, and
the time left of a time budget (``trainer.max_time``). Counting from ``trainer.global_step`` and the
budget's clock (Lightning's ``Timer``, restored from the checkpoint) keeps them right after a resume.
Metrics are shown when the loggers write them (every ``trainer.log_every_n_steps``): reading a value
on the CPU waits for the GPU, which would slow every step.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from llm_lab.console import number
from llm_lab.lit.base import is_logging_step
from llm_lab.lit.schedules import time_budget

log = logging.getLogger("train")


def time_left(trainer: L.Trainer) -> float | None:
    """Seconds left of the run's time budget (``trainer.max_time``), None without one."""
    timer = time_budget(trainer)
    return None if timer is None else max(0.0, timer.time_remaining() or 0.0)


def clock(seconds: float) -> str:
    """``3:07`` (minutes:seconds) or ``1:02:03`` (hours:minutes:seconds)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_position(trainer: L.Trainer) -> tuple[str, int | None]:
    """``("step 50/500", 500)``, ``("step 50/500 epoch 2/5", 500)`` when epochs bound the run, and
    ``("step 50 (3:07 left)", None)`` under a time budget alone; the total is None for a run without
    a known number of steps (a time budget, an endless iterable)."""
    total = trainer.estimated_stepping_batches
    steps = None if math.isinf(total) else int(total)
    text = f"step {trainer.global_step}" + (f"/{steps}" if steps is not None else "")
    max_epochs = trainer.max_epochs or -1
    if max_epochs > 0 and (trainer.max_steps <= 0 or steps is not None and steps < trainer.max_steps):
        text += f" epoch {trainer.current_epoch + 1}/{max_epochs}"
    left = time_left(trainer)
    if left is not None:
        text += f" ({clock(left)} left)"
    return text, steps


def warn_if_never_logged(trainer: L.Trainer) -> None:
    """Warn when the loggers will get no training metrics at all: the loggers write every
    ``trainer.log_every_n_steps`` steps of the whole run, and the run has fewer. (Lightning's own
    warning compares the interval with one epoch's batches instead, and so also fires for a run of
    many short epochs that logs just fine; the console leaves it to train.log.)"""
    total = trainer.estimated_stepping_batches
    every: int = getattr(trainer, "log_every_n_steps", 0)  # set by the Trainer, untyped
    if trainer.is_global_zero and trainer.loggers and not math.isinf(total) and total < every:
        log.warning(
            f"trainer.log_every_n_steps={every} is more than the run's {int(total)} steps: the loggers"
            f" get no training metrics (set trainer.log_every_n_steps={max(1, int(total))} or less)"
        )


def metrics_text(trainer: L.Trainer, prefix: str) -> str:
    """The scalar metrics whose name starts with ``prefix``, as ``name=value`` pairs."""
    return " ".join(
        f"{k}={number(float(v))}"
        for k, v in sorted(trainer.callback_metrics.items())
        if k.startswith(prefix) and v.numel() == 1
    )


def log_test_results(trainer: L.Trainer) -> None:
    """One line of the test stage's metrics, in the format of the other lines (Lightning's table
    of them, with every digit of a float, is turned off: ``trainer.test(verbose=False)``)."""
    metrics = metrics_text(trainer, "test/")
    if trainer.is_global_zero and metrics:
        log.info(f"test at step {trainer.global_step} {metrics}")


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps over the whole run instead of batches per epoch."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        warn_if_never_logged(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        description, total = run_position(trainer)
        bar = self.train_progress_bar
        bar.reset(total=total)
        bar.n = bar.initial = trainer.global_step
        bar.set_description(
            description.split(" ", 2)[-1].split(" (")[0] if " epoch " in description else "train"
        )
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            if is_logging_step(trainer, trainer.global_step):
                bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_end(trainer, pl_module)
        log_test_results(trainer)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Lightning's progress-bar metrics, the losses, and the time left of a time budget."""
        metrics: dict[str, Any] = dict(super().get_metrics(trainer, pl_module))
        for key in ("train/loss", "val/loss"):
            value = trainer.callback_metrics.get(key)
            if key not in metrics and value is not None and value.numel() == 1:
                metrics[key] = number(float(value))
        left = time_left(trainer)
        if left is not None:
            metrics["left"] = clock(left)
        return metrics


class LineProgress(L.Callback):
    """Log one line every ``every_n_steps`` optimizer steps and one per validation (to the console and
    the run's ``train.log``); ``train.py`` uses it instead of the bar when stdout is not a terminal."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._start = time.perf_counter()
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        warn_if_never_logged(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end at the same step: report it once.
        if step != self._last_step and (step % self.every_n_steps == 0 or step == 1):
            self._last_step = step
            # The position always; the metrics as last logged (every trainer.log_every_n_steps).
            self._log(trainer, run_position(trainer)[0], metrics_text(trainer, "train/"))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = metrics_text(trainer, "val/")
        if not trainer.sanity_checking and metrics:  # nothing logged (e.g. per-epoch metrics): no line
            self._log(trainer, f"validation at step {trainer.global_step}", metrics)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_test_results(trainer)

    def _log(self, trainer: L.Trainer, what: str, metrics: str) -> None:
        if trainer.is_global_zero:
            log.info(f"[{time.perf_counter() - self._start:7.1f}s] {what} {metrics}".rstrip())

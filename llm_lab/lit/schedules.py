"""Learning-rate schedules, as multipliers of the optimizer's base learning rate, stepped per batch.

A schedule decays over the length of the run, which the Trainer knows in one of two ways:

- in steps: ``trainer.max_steps`` or ``trainer.max_epochs`` (Lightning's ``estimated_stepping_batches``),
  so neither is repeated in the scheduler's config;
- in time: ``trainer.max_time``, a wall-clock budget. How many steps it holds is known only as the run
  goes: a run that has used the fraction *f* of its budget in *s* steps will end after about *s / f*
  steps. Progress is therefore elapsed time / budget, and the decay reaches its floor when the time
  runs out.

With both, the run ends at whichever limit comes first, and so does the decay. The arithmetic lives in
plain functions of the step (``llm_lab/nn/lr_schedule.py``); here it only becomes a ``LambdaLR``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from llm_lab.errors import ArgumentError, checked_by
from llm_lab.nn.lr_schedule import WarmupStart, lr_warmup_cosine

# The fraction of the time budget used so far: 0 when training starts, 1 when the time is up.
TimeSpent = Callable[[], float]


def time_budget(trainer: L.Trainer) -> Timer | None:
    """Lightning's ``Timer`` that enforces ``trainer.max_time``, or None without a time budget."""
    timers = [c for c in getattr(trainer, "callbacks", []) if isinstance(c, Timer)]
    return timers[0] if timers and timers[0].time_remaining() is not None else None


def time_spent(trainer: L.Trainer) -> TimeSpent | None:
    """The share of ``trainer.max_time`` used so far, as measured by Lightning's ``Timer`` (which
    carries the time of the run it resumes), or None without a time budget.

    Every process must apply the same learning rate, so rank 0's clock decides: the fraction is
    broadcast, as the Timer broadcasts its decision to stop (identity with a single process)."""
    timer = time_budget(trainer)
    if timer is None:
        return None
    budget = timer.time_elapsed() + (timer.time_remaining() or 0.0)

    def spent() -> float:
        fraction = timer.time_elapsed() / budget if budget > 0 else 1.0
        return float(trainer.strategy.broadcast(fraction))

    return spent


def check_ratio(min_lr_ratio: float = 0.1, warmup_steps: int = 0, **_: Any) -> None:
    """A schedule's settings, by name (also before anything is built: see ``checked_by``)."""
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ArgumentError("min_lr_ratio", f"{min_lr_ratio} is not in [0, 1]", "use e.g. 0.1")
    if warmup_steps < 0:
        raise ArgumentError("warmup_steps", f"{warmup_steps} < 0", "use 0 (no warm-up) or more")


def end_step(step: int, total_steps: float, time_spent: TimeSpent | None = None) -> int:
    """The step at which the run ends, as known at ``step``: ``total_steps`` (``inf`` when only time
    bounds the run) or, under a time budget, the steps the budget holds at the pace so far
    (``step / time_spent()``), whichever is fewer. Before any time has passed the end is unknown and
    taken as far away (``sys.maxsize``): the schedule is then at its start."""
    end = total_steps
    if time_spent is not None:
        spent = time_spent()
        if spent > 0:
            end = min(end, step / spent)
    return round(end) if math.isfinite(end) else sys.maxsize


@checked_by(check_ratio)
def warmup_cosine(
    optimizer: Optimizer,
    total_steps: float,
    warmup_steps: int = 100,
    min_lr_ratio: float = 0.1,
    warmup_start: WarmupStart = "one_step",
    time_spent: TimeSpent | None = None,
) -> LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to ``min_lr_ratio`` × base at the end of the
    run (GPT-2/3 recipe; Loshchilov & Hutter 2017): at ``total_steps``, or when ``time_spent()``
    reaches 1 (see :func:`end_step`). ``warmup_start`` picks the warm-up convention: ``"one_step"``
    (step 0 at base/warmup_steps) or ``"zero"`` (step 0 at 0, as CS336)."""
    check_ratio(min_lr_ratio)
    return LambdaLR(
        optimizer,
        lambda step: lr_warmup_cosine(
            step, 1.0, min_lr_ratio, warmup_steps, end_step(step, total_steps, time_spent), warmup_start
        ),
    )


@checked_by(check_ratio)
def linear_decay(
    optimizer: Optimizer,
    total_steps: float,
    min_lr_ratio: float = 1e-4,
    time_spent: TimeSpent | None = None,
) -> LambdaLR:
    """Linear decay from the base rate to ``min_lr_ratio`` × base over training (word2vec.c's
    schedule); the end of training as in :func:`warmup_cosine`."""
    check_ratio(min_lr_ratio)

    def factor(step: int) -> float:
        return max(min_lr_ratio, 1.0 - step / max(1, end_step(step, total_steps, time_spent)))

    return LambdaLR(optimizer, factor)

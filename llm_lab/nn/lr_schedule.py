"""The learning rate at a step: linear warm-up, then cosine decay (Loshchilov & Hutter 2017).

Adam's second-moment estimate is noisy for the first steps, and a full learning rate on freshly
initialised weights can throw them far off; a short linear warm-up avoids both. Afterwards the rate
follows half a cosine from its peak down to a floor, which spends more steps near the peak and near
the end than a straight line would (Raschka appendix D.1-D.2; CS336 assignment 1 §4.4).

Two conventions for the warm-up are in use, and they differ by one step:

- ``"zero"``: ``lr · step / warmup_steps``. Step 0 runs at learning rate 0 and the peak is reached
  at step ``warmup_steps``. CS336's ``get_lr_cosine_schedule`` and Raschka's appendix D (with
  ``initial_lr = 0``) count this way.
- ``"one_step"``: ``lr · (step + 1) / warmup_steps``. The very first step already learns, and the
  peak is reached at step ``warmup_steps - 1``; the decay still starts at step ``warmup_steps``.

``llm_lab/lit/schedules.py`` turns this function into a per-step ``LambdaLR`` for Lightning.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from llm_lab.errors import ArgumentError

WarmupStart = Literal["zero", "one_step"]
WARMUP_STARTS: tuple[str, ...] = get_args(WarmupStart)


def lr_warmup_cosine(
    step: int,
    max_lr: float,
    min_lr: float,
    warmup_steps: int,
    cycle_steps: int,
    warmup_start: WarmupStart,
) -> float:
    """The learning rate at ``step`` (counted from 0), with the warm-up convention named by
    ``warmup_start`` (no default: the two are easy to confuse, so every caller says which).

    - ``step < warmup_steps``: linear warm-up towards ``max_lr`` (see the module's two conventions);
    - ``warmup_steps <= step < cycle_steps``: ``min_lr + (max_lr - min_lr) · (1 + cos(π·p)) / 2``
      with ``p = (step - warmup_steps) / (cycle_steps - warmup_steps)`` going from 0 to 1;
    - ``step >= cycle_steps``: ``min_lr``.

    ``cycle_steps`` is the step at which the decay ends (CS336's ``cosine_cycle_iters``, ``T_c``),
    counted from the start of training, not from the end of the warm-up.
    """
    if warmup_steps < 0:
        raise ArgumentError("warmup_steps", f"{warmup_steps} < 0", "use 0 or more")
    if warmup_start not in WARMUP_STARTS:
        raise ArgumentError(
            "warmup_start", f"unknown value {warmup_start!r}", f"use one of {', '.join(WARMUP_STARTS)}"
        )
    if step < warmup_steps:
        done = step + 1 if warmup_start == "one_step" else step
        return max_lr * done / warmup_steps
    if step >= cycle_steps:
        return min_lr
    progress = (step - warmup_steps) / (cycle_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

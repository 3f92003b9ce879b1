"""Learning-rate schedules, as multipliers of the optimizer's base learning rate, stepped per batch.

Each takes ``total_steps`` from the Trainer (``estimated_stepping_batches``), so ``max_steps`` or
``max_epochs`` both work without repeating the step count in the scheduler's config.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from llm_lab.errors import ConfigError


def check_ratio(min_lr_ratio: float) -> None:
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError("scheduler.min_lr_ratio", f"{min_lr_ratio} is not in [0, 1]", "use e.g. 0.1")


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 100, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to ``min_lr_ratio`` × base (GPT-2/3 recipe;
    Loshchilov & Hutter 2017 for the cosine shape)."""
    if warmup_steps < 0:
        raise ConfigError("scheduler.warmup_steps", f"{warmup_steps} < 0", "use 0 or more")
    check_ratio(min_lr_ratio)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def linear_decay(optimizer: Optimizer, total_steps: int, min_lr_ratio: float = 1e-4) -> LambdaLR:
    """Linear decay from the base rate to ``min_lr_ratio`` × base over training (word2vec.c's schedule)."""
    check_ratio(min_lr_ratio)

    def factor(step: int) -> float:
        return max(min_lr_ratio, 1.0 - step / max(1, total_steps))

    return LambdaLR(optimizer, factor)

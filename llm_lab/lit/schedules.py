"""Learning-rate schedules, as multipliers of the optimizer's base learning rate, stepped per batch.

Each takes ``total_steps`` from the Trainer (``estimated_stepping_batches``), so ``max_steps`` or
``max_epochs`` both work without repeating the step count in the scheduler's config. The arithmetic
lives in plain functions (``llm_lab/nn/lr_schedule.py``); here it only becomes a ``LambdaLR``.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from llm_lab.errors import ArgumentError
from llm_lab.nn.lr_schedule import WarmupStart, lr_warmup_cosine


def check_ratio(min_lr_ratio: float) -> None:
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ArgumentError("min_lr_ratio", f"{min_lr_ratio} is not in [0, 1]", "use e.g. 0.1")


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 100,
    min_lr_ratio: float = 0.1,
    warmup_start: WarmupStart = "one_step",
) -> LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to ``min_lr_ratio`` × base at
    ``total_steps`` (GPT-2/3 recipe; Loshchilov & Hutter 2017). ``warmup_start`` picks the warm-up
    convention: ``"one_step"`` (step 0 at base/warmup_steps) or ``"zero"`` (step 0 at 0, as CS336)."""
    check_ratio(min_lr_ratio)
    return LambdaLR(
        optimizer,
        lambda step: lr_warmup_cosine(step, 1.0, min_lr_ratio, warmup_steps, total_steps, warmup_start),
    )


def linear_decay(optimizer: Optimizer, total_steps: int, min_lr_ratio: float = 1e-4) -> LambdaLR:
    """Linear decay from the base rate to ``min_lr_ratio`` × base over training (word2vec.c's schedule)."""
    check_ratio(min_lr_ratio)

    def factor(step: int) -> float:
        return max(min_lr_ratio, 1.0 - step / max(1, total_steps))

    return LambdaLR(optimizer, factor)

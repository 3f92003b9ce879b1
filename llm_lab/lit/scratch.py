"""Manual optimisation for the hand-written learners: the perceptron and the scratch MLP.

Their weights change by rules written out in ``llm_lab/nn`` (Rosenblatt's update, hand-written
backprop + SGD), not by autograd, so they run under Lightning's manual optimisation. They still
enter through ``train.py`` like every other stage: same DataModule, loggers, callbacks, checkpoints,
and ``trainer.max_epochs`` / ``trainer.max_steps`` / ``optimizer.lr`` / ``scheduler=...`` mean the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor

from llm_lab.errors import ArgumentError, UnknownArgument
from llm_lab.lit.base import LabModule

T = TypeVar("T")


class HandWrittenUpdate(torch.optim.Optimizer):
    """The learning rate of a hand-written rule; ``step(closure)`` runs the rule and nothing else.

    Why an optimizer at all: Lightning counts training steps (``trainer.max_steps``,
    ``global_step``, the logging cadence) by optimizer steps, and schedulers and the learning-rate
    monitor read ``lr`` from an optimizer's parameter groups. The update itself is the closure,
    which reads ``lr`` from here, so a scheduler can anneal it.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.1, **others: Any) -> None:
        if others:
            # e.g. `optimizer=adamw` on the command line merges AdamW's keys into this one.
            raise UnknownArgument(sorted(others), "a hand-written learner takes only a learning rate (lr)")
        if not lr > 0:
            raise ArgumentError("lr", f"must be > 0, got {lr}", "e.g. 0.1")
        super().__init__(params, {"lr": lr})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise ValueError("HandWrittenUpdate.step needs the hand-written update as its closure")
        return closure()


def check_hand_written(optimizer: torch.optim.Optimizer) -> None:
    """Refuse an autograd optimizer for a learner that has no autograd gradients."""
    if not isinstance(optimizer, HandWrittenUpdate):
        raise ArgumentError(
            "optimizer",
            f"{type(optimizer).__name__} cannot train a hand-written learner (it has no autograd gradients)",
            "keep the experiment's llm_lab.lit.scratch.HandWrittenUpdate and set optimizer.lr",
        )


def hand_written_step(module: LabModule, update: Callable[[float], T]) -> T:
    """Run ``update(lr)`` as one counted training step, then step the scheduler, if any."""
    optimizer = module.optimizers()
    assert not isinstance(optimizer, list)
    lr = optimizer.param_groups[0]["lr"]
    result: T = optimizer.step(closure=lambda: update(lr))
    scheduler = module.lr_schedulers()
    if isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        # Manual optimisation leaves scheduler stepping to the module.
        scheduler.step()
    return result

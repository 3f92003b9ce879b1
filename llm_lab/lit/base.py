"""What every LightningModule of the lab shares: optimizer and scheduler from the config.

Models are plain ``nn.Module``s that know nothing of Lightning; a LightningModule wraps one per
*objective* (CBoW, classification, next-token prediction). The optimizer and scheduler arrive as
Hydra partials (``_partial_: true``) from the top-level ``optimizer/`` and ``scheduler/`` groups,
so ``optimizer.lr=3e-3`` works the same for every stage. The schedule learns when the run ends from
the Trainer: its steps, or its time budget (``trainer.max_time``; see ``llm_lab/lit/schedules.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn

from llm_lab.errors import ArgumentError
from llm_lab.lit.fsdp import FSDP2Strategy
from llm_lab.lit.resume import RECORD, adopt_settings, training_record
from llm_lab.lit.schedules import time_spent
from llm_lab.nn.clipping import clip_grad_norm

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
# Called as factory(optimizer, total_steps=..., [time_spent=...]): see llm_lab/lit/schedules.py.
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


CLIP_BACKENDS = ("torch", "lab")
log = logging.getLogger(__name__)


def warmup_notice(scheduler: Any, total_steps: float) -> str | None:
    """A warning when the schedule's warm-up (the ``warmup_steps`` of a ``scheduler/`` partial) is
    longer than the run: the learning rate would never reach its peak, and nothing else would say so.
    None when the warm-up fits, or when the run's length is not known in steps (a time budget)."""
    warmup = getattr(scheduler, "keywords", {}).get("warmup_steps")
    if not isinstance(warmup, int) or not math.isfinite(total_steps) or warmup <= total_steps:
        return None
    return (
        f"scheduler.warmup_steps: {warmup} warm-up steps are more than the run's {int(total_steps)} "
        f"optimizer steps, so the learning rate never reaches its peak (lower scheduler.warmup_steps "
        f"below {int(total_steps)}, or train longer)"
    )


def limited_batches(batches: int, limit: Any) -> int:
    """How many of a loader's ``batches`` a ``trainer.limit_*_batches`` value lets run, counted as
    Lightning counts it: an int caps the count, a float is a fraction of it (rounded down)."""
    if isinstance(limit, float):
        return int(batches * limit)
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(batches, limit)
    return batches


def is_logging_step(trainer: L.Trainer, step: int) -> bool:
    """Whether the loggers write the metrics of optimizer step ``step`` (every
    ``trainer.log_every_n_steps``): the steps where reading a value, which waits for the device,
    costs nothing extra, because Lightning reads the logged values there anyway."""
    every: int = getattr(trainer, "log_every_n_steps", 0)  # set by the Trainer, untyped
    return every > 0 and step % every == 0


class LabModule(L.LightningModule):
    """Base LightningModule: builds the configured optimizer and a per-step scheduler, and clips
    gradients at ``trainer.gradient_clip_val`` with torch's ``clip_grad_norm_`` or, with
    ``gradient_clip_backend = "lab"`` (the ``gradient_clip_backend`` setting), the lab's own
    :func:`llm_lab.nn.clipping.clip_grad_norm`."""

    # The metrics the module logs, by name: the preflight checks optimized_metric and a checkpoint
    # monitor against them (with the LOGGED of the run's callbacks) before step 1. Empty: undeclared.
    LOGGED: tuple[str, ...] = ()

    gradient_clip_backend = "torch"

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def param_groups(self) -> Iterable[Any]:
        """Parameters (or parameter groups) handed to the optimizer; override for weight decay."""
        return self.parameters()

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            return None
        # Its values were tried before anything was built (llm_lab/app/preflight.py).
        optimizer = self.optimizer_factory(self.param_groups())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        spent = time_spent(self.trainer)
        if math.isinf(total_steps) and spent is None:
            raise ArgumentError(
                "scheduler",
                "the learning-rate schedule needs to know when training ends, and nothing bounds it",
                "bound the run by steps, epochs or a time budget",
            )
        notice = warmup_notice(self.scheduler_factory, total_steps)
        if notice is not None and self.trainer.is_global_zero:
            log.warning(notice)
        timed = {"time_spent": spent} if spent is not None else {}
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps, **timed)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # How the run was trained, so that a resume with other settings can say what changed.
        if self.trainer.optimizers:
            checkpoint[RECORD] = training_record(self.trainer.optimizers[0], self.scheduler_factory)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Before Lightning restores the optimizer and scheduler from ``checkpoint``: the configured
        # settings replace the checkpoint's, and each change is said (llm_lab/lit/resume.py).
        if self.optimizer_factory is None or self.trainer.state.fn != "fit":
            return
        fresh = self.optimizer_factory(self.param_groups())
        for line in adopt_settings(checkpoint, fresh, self.scheduler_factory):
            if self.trainer.is_global_zero:
                log.warning(line)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if self.gradient_clip_backend == "torch" or not gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        sharded = isinstance(self.trainer.strategy, FSDPStrategy | ModelParallelStrategy)
        if gradient_clip_algorithm not in (None, "norm") or sharded:
            raise ArgumentError(
                "gradient_clip_backend",
                "the lab clips the global norm of whole (unsharded) gradients",
                "clip by norm without FSDP, or use gradient_clip_backend=torch",
            )
        clip_grad_norm([p for group in optimizer.param_groups for p in group["params"]], gradient_clip_val)

    def sharding_root(self) -> nn.Module:
        """The module ``trainer=fsdp`` shards: the one whose ``forward`` the training step calls."""
        raise ArgumentError(
            "strategy",
            f"{type(self).__name__} does not support sharding (FSDP)",
            "use trainer=cpu, trainer=gpu or trainer=ddp",
        )

    def configure_model(self) -> None:
        """Under ``trainer=fsdp``, shard the model over the processes (``llm_lab/lit/fsdp.py``)."""
        strategy = self.trainer.strategy
        if isinstance(strategy, FSDP2Strategy):
            strategy.shard(self.sharding_root())

    @property
    def run_dir(self) -> Path:
        """The run directory, where a stage writes its artifacts (tokenizer.json, vectors.txt…)."""
        return Path(self.trainer.default_root_dir)

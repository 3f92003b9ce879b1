"""What every LightningModule of the lab shares: optimizer and scheduler from the config.

Models are plain ``nn.Module``s that know nothing of Lightning; a LightningModule wraps one per
*objective* (CBoW, classification, next-token prediction). The optimizer and scheduler arrive as
Hydra partials (``_partial_: true``) from the top-level ``optimizer/`` and ``scheduler/`` groups,
so ``optimizer.lr=3e-3`` works the same for every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy

from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.nn.clipping import clip_grad_norm

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
# Called as factory(optimizer, total_steps=...): see llm_lab/lit/schedules.py.
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


CLIP_BACKENDS = ("torch", "lab")


class LabModule(L.LightningModule):
    """Base LightningModule: builds the configured optimizer and a per-step scheduler, and clips
    gradients at ``trainer.gradient_clip_val`` with torch's ``clip_grad_norm_`` or, with
    ``gradient_clip_backend = "lab"`` (``trainer.gradient_clip_backend``), the lab's own
    :func:`llm_lab.nn.clipping.clip_grad_norm`."""

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
        try:
            optimizer = self.optimizer_factory(self.param_groups())
        except ArgumentError:
            raise  # the lab's optimizers name their argument: train.py maps it to optimizer.<arg>
        except ValueError as err:  # torch's own checks, e.g. "Invalid learning rate: -1"
            raise ConfigError("optimizer", str(err), "check the optimizer.* values") from None
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if self.gradient_clip_backend == "torch" or not gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        if gradient_clip_algorithm not in (None, "norm") or isinstance(self.trainer.strategy, FSDPStrategy):
            raise ConfigError(
                "trainer.gradient_clip_backend",
                "the lab clips the global norm of whole (unsharded) gradients",
                "use trainer.gradient_clip_algorithm=norm without FSDP, or gradient_clip_backend=torch",
            )
        clip_grad_norm([p for group in optimizer.param_groups for p in group["params"]], gradient_clip_val)

    @property
    def run_dir(self) -> Path:
        """The run directory, where a stage writes its artifacts (tokenizer.json, vectors.txt…)."""
        return Path(self.trainer.default_root_dir)

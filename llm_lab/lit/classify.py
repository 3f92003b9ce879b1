"""The classification objective: softmax cross-entropy over class ids (Raschka, appendix A.6).

One LightningModule for every classifier of the lab; the network is a plain ``nn.Module`` mapping
features (N, in_features) to logits (N, num_classes), built from a Hydra partial as
``net(in_features=..., num_classes=...)`` with the sizes the DataModule reports.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory

Batch = tuple[Tensor, Tensor]


def log_classification(
    module: LabModule, stage: str, predicted: Tensor, y: Tensor, loss: Tensor | None = None
) -> None:
    """Log ``stage/acc`` (and ``stage/loss`` when given) for a batch of predicted class ids.

    Shared by every classification module, hand-written ones included, so that their TensorBoard
    curves have the same names and can be overlaid.
    """
    accuracy = (predicted == y).float().mean()
    if loss is not None:
        module.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(y))
    module.log(f"{stage}/acc", accuracy, prog_bar=True, batch_size=len(y))


class Classifier(LabModule):
    """Logs ``train/loss``, ``train/acc``, ``val/loss`` and ``val/acc``.

    ``predict_classes`` is what the decision-boundary callback calls on a grid of points.
    """

    def __init__(
        self,
        net: Callable[..., nn.Module],
        in_features: int,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net(in_features=in_features, num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict_classes(self, x: Tensor) -> Tensor:
        """The most probable class of each row of ``x``."""
        return self(x).argmax(dim=-1)

    def step(self, stage: str, batch: Batch) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        log_classification(self, stage, logits.argmax(dim=-1), y, loss)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.step("train", batch)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.step("val", batch)

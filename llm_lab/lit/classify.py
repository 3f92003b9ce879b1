"""The classification objective: softmax cross-entropy over class ids (Raschka, appendix A.6).

One LightningModule for every classifier of the lab; the network is a plain ``nn.Module`` mapping
features (N, in_features) to logits (N, num_classes), built from a Hydra partial as
``net(in_features=..., num_classes=...)`` with the sizes the DataModule reports. What differs
between the networks is only the update rule: a PyTorch net is trained by autograd and the
configured optimizer; a hand-written one (weights as buffers, its own ``train_step``, e.g.
``MLPScratch``) by its own rule under manual optimisation (see ``llm_lab.lit.scratch``).
Rosenblatt's perceptron is the one learner with a stopping rule of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from llm_lab.errors import ArgumentError
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory
from llm_lab.lit.scratch import HandWrittenUpdate, check_hand_written, hand_written_step
from llm_lab.nn.mlp_scratch import softmax_cross_entropy
from llm_lab.nn.perceptron import Perceptron

log = logging.getLogger(__name__)
Batch = tuple[Tensor, Tensor]


def log_classification(
    module: LabModule, stage: str, predicted: Tensor, y: Tensor, loss: Tensor | None = None
) -> None:
    """Log ``stage/acc`` (and ``stage/loss`` when given) for a batch of predicted class ids, under the
    same names for every classifier, so that their TensorBoard curves can be overlaid."""
    accuracy = (predicted == y).float().mean()
    # Evaluation means are reduced over the DDP ranks once per epoch; a training step is not worth a sync.
    sync = stage != "train"
    if loss is not None:
        module.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(y), sync_dist=sync)
    module.log(f"{stage}/acc", accuracy, prog_bar=True, batch_size=len(y), sync_dist=sync)


class Classifier(LabModule):
    """Logs ``train/loss``, ``val/loss`` and ``val/acc`` (and ``train/acc`` for autograd nets).

    ``predict_classes`` is what the decision-boundary callback calls on a grid of points.
    """

    LOGGED = tuple(f"{stage}/{name}" for stage in ("train", "val", "test") for name in ("loss", "acc")) + (
        "train/mistakes",
    )

    default_lr = 0.5  # of a hand-written rule when no optimizer is configured (e.g. in a notebook)

    def __init__(
        self,
        net: Callable[..., nn.Module],
        in_features: int,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net(in_features=in_features, num_classes=num_classes)
        self.example_input_array = torch.zeros(1, in_features)  # the model summary counts its FLOPs
        # A net without parameters keeps its weights as buffers and updates them by its own rule.
        self.hand_written = not any(True for _ in self.net.parameters())
        if self.hand_written:
            self.automatic_optimization = False
            self.optimizer_factory = optimizer or partial(HandWrittenUpdate, lr=self.default_lr)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict_classes(self, x: Tensor) -> Tensor:
        """The most probable class of each row of ``x``."""
        return self(x).argmax(dim=-1)

    def param_groups(self) -> Iterable[Any]:
        # A hand-written learner's optimizer only holds its learning rate, over its buffers.
        return list(self.buffers()) if self.hand_written else self.parameters()

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        if self.hand_written:
            check_hand_written(config["optimizer"] if isinstance(config, dict) else config)
        return config

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        if self.hand_written:
            net: Any = self.net  # e.g. MLPScratch: its own forward, backward and update
            loss = hand_written_step(self, lambda lr: net.train_step(x, y, lr))
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
            return loss
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        log_classification(self, "train", logits.argmax(dim=-1), y, loss)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        # The hand-written net scores itself with its own (float64) softmax cross-entropy.
        loss = softmax_cross_entropy(logits, y)[0] if self.hand_written else F.cross_entropy(logits, y)
        log_classification(self, "val", logits.argmax(dim=-1), y, loss)


class PerceptronClassifier(Classifier):
    """Rosenblatt's perceptron on a two-class set; says at the end whether it separated the data.

    Logs ``train/mistakes`` (per epoch) and ``val/acc``. Training stops early after an epoch with
    no mistake (the perceptron has converged); when the last epoch still had mistakes, the run says
    it has not separated the training data, in the log and as TensorBoard text. It cannot say more:
    on separable data more epochs get there (Novikoff's bound), on XOR none will.
    """

    default_lr = 1.0

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        if num_classes != 2:
            raise ArgumentError(
                "num_classes",
                f"the perceptron separates two classes, the data has {num_classes}",
                "use 2 classes, or experiment=mlp_scratch for more",
            )
        super().__init__(
            lambda in_features, num_classes: Perceptron(in_features), in_features, 2, optimizer, scheduler
        )
        self.epoch_mistakes = 0  # mistakes so far in the current (or last) epoch
        self.epoch_batches = 0  # its batches so far: fewer than an epoch's when max_steps cut it short

    @property
    def perceptron(self) -> Perceptron:
        assert isinstance(self.net, Perceptron)
        return self.net

    @torch.no_grad()
    def predict_classes(self, x: Tensor) -> Tensor:
        return self.perceptron.predict(x)

    @property
    def epoch_complete(self) -> bool:
        return self.epoch_batches >= self.trainer.num_training_batches

    def on_train_epoch_start(self) -> None:
        self.epoch_mistakes = self.epoch_batches = 0

    def training_step(self, batch: Batch, batch_idx: int) -> None:  # type: ignore[override]
        x, y = batch
        self.epoch_mistakes += hand_written_step(self, lambda lr: self.perceptron.update(x, y, lr))
        self.epoch_batches += 1

    def on_train_epoch_end(self) -> None:
        self.log("train/mistakes", float(self.epoch_mistakes))
        if self.epoch_mistakes == 0 and self.epoch_complete:
            self.trainer.should_stop = True  # converged: every training point is on its side

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        log_classification(self, "val", self.predict_classes(x), y)

    def on_train_end(self) -> None:
        # Lightning counts an epoch cut short by max_steps as done: current_epoch includes it.
        epochs = self.current_epoch
        if self.epoch_mistakes == 0 and self.epoch_complete:
            message = f"the perceptron separates the training data: no mistakes in epoch {epochs}"
            log.info(message)
        else:
            last = (
                "its last epoch" if self.epoch_complete else "its last epoch (cut short by trainer.max_steps)"
            )
            mistakes = plural(self.epoch_mistakes, "mistake")
            message = (
                f"the perceptron has not separated the training data: {mistakes} in {last}, after "
                f"{plural(epochs, 'epoch')}. If the classes are linearly separable, more epochs get "
                "there (trainer.max_epochs); if not (XOR is not), no number of epochs will: use a "
                "hidden layer (experiment=mlp_scratch)."
            )
            log.warning(message)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("perceptron/result", message, self.global_step)


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"

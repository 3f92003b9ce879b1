"""LightningModules that drive the hand-written learners: the perceptron and the scratch MLP.

Their weights change by rules written out in ``llm_lab/nn`` (Rosenblatt's update, hand-written
backprop + SGD), not by autograd, so they use Lightning's manual optimization. They still enter
through ``train.py`` like every other stage: same DataModule, loggers, callbacks, checkpoints, and
``trainer.max_epochs`` / ``trainer.max_steps`` / ``optimizer.lr`` / ``scheduler=...`` mean the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from llm_lab.errors import ConfigError
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory
from llm_lab.lit.classify import Batch, log_classification
from llm_lab.nn.mlp_scratch import MLPScratch, softmax_cross_entropy
from llm_lab.nn.perceptron import Perceptron

log = logging.getLogger(__name__)
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
            raise ConfigError(
                "optimizer",
                f"a hand-written learner takes only optimizer.lr, got also {sorted(others)}",
                "keep the experiment's optimizer and set optimizer.lr",
            )
        if not lr > 0:
            raise ConfigError("optimizer.lr", f"must be > 0, got {lr}")
        super().__init__(params, {"lr": lr})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise ValueError("HandWrittenUpdate.step needs the hand-written update as its closure")
        return closure()


class HandWrittenModule(LabModule):
    """Manual optimization around a learner that updates its own buffers (see module docstring)."""

    default_lr = 0.1  # used when no optimizer is configured (e.g. in a notebook)

    def __init__(
        self, optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None
    ) -> None:
        super().__init__(optimizer or partial(HandWrittenUpdate, lr=self.default_lr), scheduler)
        self.automatic_optimization = False

    def param_groups(self) -> Iterable[Any]:
        # The weights are buffers: there are no nn.Parameters to hand over.
        return list(self.buffers())

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        if not isinstance(optimizer, HandWrittenUpdate):
            raise ConfigError(
                "optimizer",
                f"{type(optimizer).__name__} cannot train a hand-written learner (it has no autograd "
                "gradients)",
                "keep the experiment's llm_lab.lit.scratch.HandWrittenUpdate and set optimizer.lr",
            )
        return config

    def hand_written_step(self, update: Callable[[float], T]) -> T:
        """Run ``update(lr)`` as one counted training step, then step the scheduler, if any."""
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        lr = optimizer.param_groups[0]["lr"]
        result: T = optimizer.step(closure=lambda: update(lr))
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            # Manual optimization leaves scheduler stepping to the module.
            scheduler.step()  # type: ignore[union-attr]
        return result


class PerceptronClassifier(HandWrittenModule):
    """Rosenblatt's perceptron on a two-class set; says at the end whether it separated the data.

    Logs ``train/mistakes`` (per epoch) and ``val/acc``. Training stops early after an epoch with
    no mistake (the perceptron has converged); when the last epoch still had mistakes, the run says
    it cannot separate the training data, in the log and as TensorBoard text.
    """

    default_lr = 1.0

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        if num_classes != 2:
            raise ConfigError(
                "data.num_classes",
                f"the perceptron separates two classes, the data has {num_classes}",
                "set data.num_classes=2, or use experiment=mlp_scratch for more classes",
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.perceptron = Perceptron(in_features)
        self.epoch_mistakes = 0  # mistakes so far in the current (or last) epoch
        self.epochs_done = 0

    @torch.no_grad()
    def predict_classes(self, x: Tensor) -> Tensor:
        return self.perceptron.predict(x)

    def on_train_epoch_start(self) -> None:
        self.epoch_mistakes = 0

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        self.epoch_mistakes += self.hand_written_step(lambda lr: self.perceptron.update(x, y, lr))

    def on_train_epoch_end(self) -> None:
        self.epochs_done += 1
        self.log("train/mistakes", float(self.epoch_mistakes))
        if self.epoch_mistakes == 0:
            self.trainer.should_stop = True  # converged: every training point is on its side

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        log_classification(self, "val", self.predict_classes(x), y)

    def on_train_end(self) -> None:
        epochs = self.epochs_done
        if self.epoch_mistakes == 0:
            message = f"the perceptron separates the training data: no mistakes in epoch {epochs}"
            log.info(message)
        else:
            message = (
                f"the perceptron cannot separate the training data: still {self.epoch_mistakes} "
                f"mistakes in its last epoch after {epochs} epochs. If the classes are not linearly "
                "separable (XOR is not), no number of epochs will fix that: use a hidden layer "
                "(experiment=mlp_scratch)."
            )
            log.warning(message)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("perceptron/result", message, self.global_step)


class ScratchMLPClassifier(HandWrittenModule):
    """The hand-written MLP (``model.net``: an ``MLPScratch`` partial) trained by its own SGD.

    Logs ``train/loss``, ``val/loss`` and ``val/acc``, with the scratch softmax cross-entropy.
    """

    default_lr = 0.5

    def __init__(
        self,
        net: Callable[..., MLPScratch],
        in_features: int,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net(in_features=in_features, num_classes=num_classes)
        if not isinstance(self.net, MLPScratch):
            raise ConfigError(
                "model.net._target_",
                f"{type(self.net).__name__} is not a hand-written network",
                "use llm_lab.nn.mlp_scratch.MLPScratch, or experiment=mlp for PyTorch models",
            )

    @torch.no_grad()
    def predict_classes(self, x: Tensor) -> Tensor:
        return self.net(x).argmax(dim=-1)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.hand_written_step(lambda lr: self.net.train_step(x, y, lr))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        loss, _ = softmax_cross_entropy(logits, y)
        log_classification(self, "val", logits.argmax(dim=-1), y, loss)

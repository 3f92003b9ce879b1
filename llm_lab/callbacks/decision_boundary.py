"""A TensorBoard picture of a 2-D classifier: its decision regions with the training points on top.

matplotlib is not a dependency, so the image is drawn with numpy: every pixel of a grid over the
data is coloured (lightly) by the class the model predicts there, and every training point is a
small square in its true class's full colour with a dark outline, so misclassified points stand
out against the region around them. Works with any LightningModule that has
``predict_classes(x: (N, 2)) -> (N,)`` class ids (the classifier, perceptron and scratch MLP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from llm_lab.errors import ArgumentError, ConfigError

# One RGB colour per class (cycled beyond ten classes).
PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ],
    dtype=np.float64,
)
REGION_TINT = 0.35  # how much class colour the background regions get (the rest is white)
OUTLINE = np.array([30, 30, 30], dtype=np.uint8)


def render_decision_boundary(
    predict: Callable[[Tensor], Tensor],
    x: np.ndarray,
    y: np.ndarray,
    resolution: int = 200,
    point_size: int = 2,
    margin: float = 0.1,
) -> np.ndarray:
    """Draw the classes ``predict`` gives over the bounding box of ``x``; returns (H, W, 3) uint8.

    Row 0 is the top of the picture (largest x1), as on a plot. ``point_size`` is the half-width of
    a point's square in pixels; ``margin`` pads the box by that fraction of its size.
    """
    low, high = x.min(axis=0), x.max(axis=0)
    pad = margin * np.maximum(high - low, 1e-6)
    low, high = low - pad, high + pad
    cols = np.linspace(low[0], high[0], resolution)
    rows = np.linspace(high[1], low[1], resolution)
    grid = np.stack(np.meshgrid(cols, rows), axis=-1).reshape(-1, 2)
    classes = predict(torch.as_tensor(grid, dtype=torch.float32)).cpu().numpy()
    colours = PALETTE[classes.reshape(resolution, resolution) % len(PALETTE)]
    image = (255 - REGION_TINT * (255 - colours)).astype(np.uint8)

    # Pixel position of every point, then one square per point: outline first, fill inside it.
    col = np.rint((x[:, 0] - low[0]) / (high[0] - low[0]) * (resolution - 1)).astype(int)
    row = np.rint((high[1] - x[:, 1]) / (high[1] - low[1]) * (resolution - 1)).astype(int)
    fill = PALETTE[y % len(PALETTE)].astype(np.uint8)
    for half, colour in ((point_size + 1, None), (point_size, fill)):
        for dr in range(-half, half + 1):
            for dc in range(-half, half + 1):
                r = np.clip(row + dr, 0, resolution - 1)
                c = np.clip(col + dc, 0, resolution - 1)
                image[r, c] = OUTLINE if colour is None else colour
    return image


class DecisionBoundary(L.Callback):
    """Log the decision-boundary image to TensorBoard every ``every_n_epochs`` and after training.

    The points are the DataModule's ``x_train`` / ``y_train`` (see ``Toy2DDataModule``).
    """

    def __init__(self, every_n_epochs: int = 5, resolution: int = 200, point_size: int = 2) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ArgumentError(
                "every_n_epochs", f"must be >= 1, got {every_n_epochs}", "e.g. 1: every epoch"
            )
        self.every_n_epochs = every_n_epochs
        self.resolution = resolution
        self.point_size = point_size
        self._last_step = -1

    def on_fit_start(self, trainer: L.Trainer, module: Any) -> None:
        if not callable(getattr(module, "predict_classes", None)):
            raise ConfigError(
                "callbacks.decision_boundary",
                f"{type(module).__name__} has no predict_classes(x) to draw regions with",
                "use it only with 2-D classification experiments, or set it to null",
            )
        if not hasattr(getattr(trainer, "datamodule", None), "x_train"):
            raise ConfigError(
                "callbacks.decision_boundary", "the data has no 2-D points (x_train)", "use data=toy2d"
            )

    def _log_image(self, trainer: L.Trainer, module: Any) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero or trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        datamodule: Any = getattr(trainer, "datamodule", None)
        x, y = datamodule.x_train.numpy(), datamodule.y_train.numpy()
        was_training = module.training
        module.eval()
        predict = module.predict_classes
        image = render_decision_boundary(
            lambda grid: predict(grid.to(module.device)), x, y, self.resolution, self.point_size
        )
        module.train(was_training)
        for logger in loggers:
            step = trainer.global_step
            logger.experiment.add_image("val/decision_boundary", image, step, dataformats="HWC")

    def on_validation_epoch_end(self, trainer: L.Trainer, module: Any) -> None:
        if not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0:
            self._log_image(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        self._log_image(trainer, module)

"""TensorBoard as the lab uses it: curves, and one HParams record per run that does not hide them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams


class LabTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger that remembers which scalar tags it wrote, so that the run's
    HParams record (:meth:`log_hparams_record`) names exactly the metrics that have a curve.

    TensorBoard's HParams view shows, for each metric of a record, the last point of that metric's
    curve in the run; writing the final values again (as ``log_hyperparams(params, metrics)`` does,
    at step 0) would put a second point under the same tag and hide the curve in the default view.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scalar_tags: set[str] = set()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(dict(metrics), step)
        self.scalar_tags.update(metrics)

    def log_hparams_record(self, record: Mapping[str, Any]) -> None:
        """One HParams record: ``record`` as the hyperparameters, every logged scalar as a metric."""
        writer = self.experiment._get_file_writer()
        for summary in hparams(dict(record), dict.fromkeys(sorted(self.scalar_tags), 0.0)):
            writer.add_summary(summary)
        writer.flush()

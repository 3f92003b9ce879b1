"""Lightning's model summary, with a FLOPs column only when the count means something."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger("train")


class LabModelSummary(ModelSummary):
    """The layer table Lightning prints when fitting starts. Its FLOPs come from running the
    module's ``example_input_array`` under torch's FLOP counter, which counts matrix products only:
    a model without any (CBoW's negative sampling is gathers and dot products) gets no FLOPs column
    rather than a column of zeros that reads like a measurement."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops == 0:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
            *summary_data,
        )
        if total_flops == 0:
            table = table.rsplit("\n", 1)[0]  # the "0 Total Flops" line
        log.info("\n" + table)

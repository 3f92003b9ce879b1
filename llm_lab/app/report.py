"""What a finished run leaves behind: ``metrics.json``, the HParams record of its TensorBoard logs,
no FAILED marker of an earlier attempt, and a last line saying where to look."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig

from llm_lab.atomic import replacing
from llm_lab.config import COMMAND_LINE
from llm_lab.hparams import hparams_record
from llm_lab.loggers import LabTensorBoardLogger

log = logging.getLogger("train")


def finish(
    cfg: DictConfig, metrics: dict[str, float], loggers: list[Logger], net: Any = None
) -> dict[str, float]:
    """The HParams record for TensorBoard (see ``llm_lab.hparams``), the loggers closed,
    ``metrics.json`` written, the FAILED marker of an earlier attempt removed, and a last line
    saying where the run folder is and how to look at it; returns ``metrics``."""
    output_dir = Path(cfg.paths.output_dir)
    swept, choices = COMMAND_LINE.swept, COMMAND_LINE.choices
    record = hparams_record(cfg, swept, choices, net, run_name=output_dir.resolve().name)
    for logger in loggers:
        if isinstance(logger, LabTensorBoardLogger):
            logger.log_hparams_record(record, cfg.get("optimized_metric"))
        else:
            logger.log_hyperparams(record.values)
        logger.finalize("success")
    with replacing(output_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (output_dir / "FAILED").unlink(missing_ok=True)  # an earlier attempt in this folder failed
    log.info(where_to_look(cfg, loggers))
    return metrics


def from_cwd(path: Path) -> Path:
    """``path`` relative to where the command was started when it lies below it: what a user types."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def where_to_look(cfg: DictConfig, loggers: list[Logger]) -> str:
    """The last line of a run: its folder and, with a TensorBoard logger, the command that shows it
    beside the experiment's other runs (``outputs/<experiment>``), or alone when it lives elsewhere."""
    run_dir = Path(cfg.paths.output_dir).resolve()
    line = f"run folder: {from_cwd(run_dir)}"
    if any(isinstance(logger, TensorBoardLogger) for logger in loggers):
        experiment_dir = (Path(cfg.paths.log_dir) / cfg.task_name).resolve()
        logdir = experiment_dir if run_dir.is_relative_to(experiment_dir) else run_dir
        line += f"  (tensorboard --logdir {shlex.quote(str(from_cwd(logdir)))})"
    return line

"""What a finished run leaves behind: ``metrics.json``, the HParams record of its TensorBoard logs,
no FAILED marker of an earlier attempt, and a last line saying where to look."""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig

from llm_lab.atomic import replacing
from llm_lab.config import COMMAND_LINE, flatten, plain
from llm_lab.loggers import LabTensorBoardLogger

log = logging.getLogger("train")
HPARAM_GROUPS = ("data", "tokenizer", "model", "optimizer", "scheduler", "trainer", "stage")


def hparams_record(cfg: DictConfig, net: Any = None) -> dict[str, Any]:
    """What a person compares runs by in TensorBoard's HParams view: the option chosen in each
    config group (``experiment``, ``model``, ``optimizer``, …), the seed, and the plain values of
    data, tokenizer, model, optimizer, scheduler and trainer (no ``_target_`` paths, no objects).
    A net with a dataclass ``config`` (GPT) gives the values it was built with: ``size=lab-small``
    leaves ``n_layer`` null in the config, the dashboard should still show 4."""
    record: dict[str, Any] = {
        group: choice
        for group, choice in COMMAND_LINE.choices.items()
        if group in ("experiment", *HPARAM_GROUPS)
    }
    record["seed"] = cfg.seed
    for group in HPARAM_GROUPS:
        for key, value in flatten(plain(cfg.get(group)), f"{group}/").items():
            if key.rsplit("/", 1)[-1].startswith("_") or (isinstance(value, str) and "_target_" in value):
                continue
            record[key] = "null" if value is None else value
    built = getattr(net, "config", None)
    if is_dataclass(built) and not isinstance(built, type):
        for key, value in asdict(built).items():
            record[f"model/net/{key}"] = "null" if value is None else value
    return record


def finish(
    cfg: DictConfig, metrics: dict[str, float], loggers: list[Logger], net: Any = None
) -> dict[str, float]:
    """The HParams record for TensorBoard (see ``llm_lab.loggers``), the loggers closed,
    ``metrics.json`` written, the FAILED marker of an earlier attempt removed, and a last line
    saying where the run folder is and how to look at it; returns ``metrics``."""
    record = hparams_record(cfg, net)
    for logger in loggers:
        if isinstance(logger, LabTensorBoardLogger):
            logger.log_hparams_record(record)
        else:
            logger.log_hyperparams(record)
        logger.finalize("success")
    output_dir = Path(cfg.paths.output_dir)
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

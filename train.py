"""One entry point for every stage of the lab: ``python train.py experiment=NAME [key=value ...]``.

The flow is the same for every stage (see README "Architecture"): the config names a DataModule, a
LightningModule, callbacks, loggers and a Trainer; the DataModule is set up first so the model can
be sized from the data (``datamodule.model_kwargs()``); then fit, optionally test, and return the
metric named by ``optimized_metric`` so that Hydra sweeps (grid or Optuna) can use it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from llm_lab.config import as_config_error, build, flatten, register_resolvers
from llm_lab.errors import ArgumentError, ConfigError, LabError

register_resolvers()


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    callbacks = [build(c, cfg) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not has_logger:  # e.g. logger=none: a learning-rate monitor has nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not sys.stdout.isatty():
        from llm_lab.callbacks.progress import LineProgress

        callbacks.append(LineProgress(every_n_steps=cfg.get("progress_every_n_steps", 50)))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [build(c, cfg) for c in (cfg.get("logger") or {}).values() if c is not None]


def resolve_ckpt_path(ckpt_path: str | None) -> str | None:
    """``ckpt_path`` may be a checkpoint file, ``last`` (Lightning's: the newest in this run's
    checkpoints/, so pair it with ``hydra.run.dir=<old run>``), or a run directory (its last.ckpt)."""
    if ckpt_path is None or ckpt_path == "last":
        return ckpt_path
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError("ckpt_path", f"no checkpoint at {path}", "give a .ckpt file or a run directory")
    return str(path)


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) the configured stage; return its final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    output_dir = Path(cfg.paths.output_dir)

    datamodule = build(cfg.data, cfg)
    datamodule.setup("fit")
    optim_kwargs = {}
    if cfg.get("optimizer") is not None:
        optim_kwargs["optimizer"] = build(cfg.optimizer, cfg)
    if cfg.get("scheduler") is not None:
        optim_kwargs["scheduler"] = build(cfg.scheduler, cfg)
    module = build(cfg.model, cfg, **optim_kwargs, **datamodule.model_kwargs())

    loggers = build_loggers(cfg)
    trainer: L.Trainer = build(
        cfg.trainer,
        cfg,
        callbacks=build_callbacks(cfg, has_logger=bool(loggers)),
        logger=loggers or False,
        enable_progress_bar=sys.stdout.isatty(),
        default_root_dir=str(output_dir),
    )
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"))
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        ckpt_path = None  # from here on the module holds the trained weights
    metrics = scalar_metrics(trainer)
    target = cfg.get("optimized_metric") or ""
    if target.startswith("val/") and target not in metrics:
        # A run that stopped (max_steps) before its first validation, or train=false with a
        # checkpoint, still reports its score.
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(scalar_metrics(trainer))
    if cfg.get("test", False):
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(scalar_metrics(trainer))

    if trainer.is_global_zero:
        hparams = flatten(OmegaConf.to_container(cfg, resolve=True))
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                # TensorBoard's HParams view pairs a run's hyperparameters with its final metrics.
                logger.log_hyperparams(hparams, metrics)
            else:
                logger.log_hyperparams(hparams)
            logger.finalize("success")
        tmp = output_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        tmp.replace(output_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
        return optimized_value(cfg, metrics)
    except (LabError, ArgumentError) as err:
        # A bad value in the config or the data: one clear line, exit code 2, and a FAILED marker
        # so the run directory never looks like a finished run.
        if isinstance(err, ArgumentError):  # raised by the library after the objects were built
            err = as_config_error(err, cfg)
        out = Path(cfg.paths.output_dir)
        if out.is_dir():
            (out / "FAILED").write_text(f"{err}\n")
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a sweep optimises: ``metrics[cfg.optimized_metric]``."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise ConfigError("optimized_metric", f"{name!r} was not logged", f"pick one of {sorted(metrics)}")
    return metrics[name]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

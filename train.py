"""One entry point for every stage of the lab: ``python train.py experiment=NAME [key=value ...]``.

The flow is the same for every stage (README "Architecture"), and :func:`train` reads it top to
bottom:

0. **preflight** — every problem of the composed config at once, before anything heavy starts;
1. **corpus** — the ``corpus`` group says where the text is; it is read and split by document
   (``llm_lab.data.corpus``);
2. **starting model** — ``init_from``'s pretrained net and tokenizer (``llm_lab.models.pretrained``),
   or none: random weights;
3. **tokenizer** — the starting model's, or the ``tokenizer`` group's, trained once per corpus and
   settings and cached (``llm_lab.tokenizers.build``); a stage without a model stops at this step,
   after training its tokenizer in a plain loop (``llm_lab.tokenizer_stage``);
4. **data, model, Trainer** — a DataModule (``data``), a LightningModule (``model``, sized by the
   data and handed the tokenizer and the starting model) and a Trainer, built from their groups;
5. **fit and test**, then **finish**: ``metrics.json``, the HParams record, where to look; the command
   returns ``optimized_metric``, which sweeps optimise. Errors, signals and exit codes are the shell's.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_lab.app.shell import entry_point, starting

with starting():  # Ctrl-C while torch and Lightning load is one line too
    import lightning as L
    import torch
    from lightning.pytorch.loggers import Logger
    from omegaconf import DictConfig, OmegaConf

    from llm_lab import tokenizer_stage
    from llm_lab.app.preflight import Setting, preflight
    from llm_lab.app.report import finish
    from llm_lab.app.resolvers import register_resolvers
    from llm_lab.app.run_folder import (
        check_same_tokenizer,
        is_first_process,
        resolve_earlier_runs,
        resume_point,
        starting_model,
    )
    from llm_lab.app.train_checks import TRAIN_CHECKS, check_validation_interval, needed_groups
    from llm_lab.callbacks.metric_check import OptimizedMetricCheck, missing_metric
    from llm_lab.callbacks.progress import LineProgress, StepProgressBar
    from llm_lab.config import COMMAND_LINE, build, build_each, call, keyed, plain
    from llm_lab.data.corpus import Corpus
    from llm_lab.hparams import trial_name
    from llm_lab.loggers import LabTensorBoardLogger
    from llm_lab.run_dir import check_fits
    from llm_lab.tokenizers.base import Tokenizer
    from llm_lab.tokenizers.build import build_tokenizer

register_resolvers()
log = logging.getLogger("train")

# The top-level keys of conf/train.yaml that train.py reads itself (the preflight checks them).
SETTINGS = {
    "train": Setting("bool", "train=true fits the model, train=false only evaluates ckpt_path"),
    "test": Setting("bool", "test=true or test=false"),
    # Lightning's seed_everything replaces a seed outside 0..2^32-1 by a random one, with a warning.
    "seed": Setting("int", "use an integer in 0..4294967295, e.g. seed=42", at_least=0, at_most=2**32 - 1),
    "torch_threads": Setting("int | None", "use 1 or more threads, or null for torch's default", at_least=1),
    "progress_every_n_steps": Setting("int", "use 1 or more, e.g. progress_every_n_steps=50", at_least=1),
    "optimized_direction": Setting("str", "", choices=("minimize", "maximize")),
    "gradient_clip_backend": Setting("str", "", choices=("torch", "lab")),
    "float32_matmul_precision": Setting("str", "", choices=("highest", "high", "medium")),
    "init_from": Setting("str | None", "a run folder, .ckpt, Hugging Face folder or experiment name"),
}


def train(cfg: DictConfig) -> dict[str, float]:
    """Run the configured stage end to end; return its final metrics."""
    preflight(cfg, SETTINGS, TRAIN_CHECKS, needed_groups(cfg))
    ckpt_path = resume_point(cfg.get("ckpt_path"), Path(cfg.paths.output_dir))
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    if (
        str(OmegaConf.select(cfg, "trainer.accelerator")) in ("gpu", "cuda", "auto")
        and torch.cuda.is_available()
    ):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)  # high: TF32 tensor cores
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)  # train(cfg) from a notebook
    resolve_earlier_runs(cfg)  # an experiment's name (init_from=gpt) → its newest finished run
    corpus: Corpus | None = build(cfg.corpus, cfg) if cfg.get("corpus") is not None else None  # step 1
    if cfg.get("model") is None:  # a tokenizer stage: trained in a plain loop, and done
        return train_tokenizer(cfg, corpus)
    start = starting_model(cfg)  # step 2, then step 3:
    tokenizer = start.tokenizer if start else tokenizer_step(cfg, corpus, ckpt_path) if corpus else None
    run = build_run(cfg, corpus, tokenizer, start and start.net)  # step 4
    metrics = fit_and_test(cfg, run, ckpt_path)  # step 5
    if not run.trainer.is_global_zero:
        return metrics
    return finish(cfg, metrics, run.loggers, getattr(run.module, "net", None))


@entry_point("train")
def main(cfg: DictConfig) -> float | None:
    """``python train.py [key=value ...]``: train, and return the metric a sweep optimises."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise missing_metric(name, metrics)
    return metrics[name]


def tokenizer_step(cfg: DictConfig, corpus: Corpus, ckpt_path: str | None) -> Tokenizer:
    """Step 3: the run's tokenizer, trained on the training documents or found in the cache, and
    saved beside the checkpoints (where generate.py finds the tokenizer of the model)."""
    settings = plain(cfg.tokenizer)
    kind = settings.pop("kind")
    with keyed(cfg.tokenizer, cfg):
        tokenizer = build_tokenizer(
            kind,
            corpus.train_documents,
            corpus.fingerprint(),
            cache_dir=cfg.paths.get("cache_dir"),
            on_train=lambda: log.info(f"training the {kind} tokenizer (cached for the next runs)"),
            **settings,
        )
    asked = settings.get("vocab_size")
    if settings.get("path") and asked is not None and asked != tokenizer.vocab_size:
        # A loaded tokenizer is not trained: its size, not the setting, sizes the model.
        log.warning(
            f"tokenizer.vocab_size={asked} is not used: the tokenizer loaded from tokenizer.path has "
            f"{tokenizer.vocab_size} tokens, and the model is sized by it (~tokenizer.vocab_size "
            "on the command line silences this)"
        )
    if ckpt_path is not None:
        check_same_tokenizer(Path(ckpt_path), tokenizer)
    if is_first_process():
        tokenizer.save(Path(cfg.paths.output_dir) / "tokenizer.json")
    return tokenizer


def train_tokenizer(cfg: DictConfig, corpus: Corpus | None) -> dict[str, float]:
    """A stage whose product is its tokenizer (``bpe``, ``simple_tokenizer``): no model, no
    optimizer, a plain loop that logs as the Trainer's would (``llm_lab/tokenizer_stage.py``)."""
    assert corpus is not None  # the preflight needs a tokenizer, hence a corpus, without a model
    loggers: list[Logger] = build_each(cfg, "logger")
    settings = plain(cfg.tokenizer)
    kind = settings.pop("kind")
    settings.pop("path", None)
    stage = plain(cfg.get("stage"))
    with keyed(cfg.get("stage"), cfg):  # stage.max_steps, not a trainer's or tokenizer's key
        tokenizer_stage.check_stage(stage)
    with keyed(cfg.tokenizer, cfg):
        tokenizer, metrics = tokenizer_stage.run(
            corpus.load(), kind, settings, stage, loggers, cfg.get("progress_every_n_steps", 50)
        )
    tokenizer.save(Path(cfg.paths.output_dir) / "tokenizer.json")
    return finish(cfg, metrics, loggers)


@dataclass
class Run:
    """Everything a Lightning stage is made of, built from the config (see :func:`build_run`)."""

    datamodule: L.LightningDataModule
    module: L.LightningModule
    trainer: L.Trainer
    loggers: list[Logger]


def build_run(cfg: DictConfig, corpus: Corpus | None, tokenizer: Tokenizer | None, pretrained: Any) -> Run:
    """Step 4: DataModule (from ``corpus`` and ``tokenizer`` when the data is text, and the starting
    model when it takes one: DPO's pairs of its own answers), LightningModule sized by the data and
    handed the starting model, loggers, callbacks and Trainer."""
    if tokenizer is not None:
        datamodule = call(cfg.data, cfg, corpus=corpus, tokenizer=tokenizer, pretrained=pretrained)
    else:
        datamodule = build(cfg.data, cfg)
    with keyed(cfg.data, cfg):
        datamodule.setup("fit")
    objects: dict[str, Any] = {"tokenizer": tokenizer} if tokenizer is not None else {}
    if pretrained is not None:
        objects["pretrained"] = pretrained
    for group in ("optimizer", "scheduler"):  # partials: the module calls them with its parameters
        if cfg.get(group) is not None:
            objects[group] = build(cfg[group], cfg)
    module = build(cfg.model, cfg, **objects, **datamodule.model_kwargs())
    module.gradient_clip_backend = cfg.get("gradient_clip_backend", "torch")
    loggers: list[Logger] = build_each(cfg, "logger")
    for logger in loggers:  # a sweep's trial: TensorBoard names the run by what it varied
        if isinstance(logger, LabTensorBoardLogger) and COMMAND_LINE.swept:
            logger.name_trial(trial_name(COMMAND_LINE.swept))
    callbacks: list[L.Callback] = build_each(cfg, "callbacks")
    # A stage that declares no metrics gets its optimized_metric checked at the first validation.
    callbacks.insert(0, OptimizedMetricCheck(cfg.get("optimized_metric")))
    every = cfg.get("progress_every_n_steps", 50)
    callbacks.append(StepProgressBar() if sys.stdout.isatty() else LineProgress(every_n_steps=every))
    trainer = build(
        cfg.trainer,
        cfg,
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=sys.stdout.isatty(),
        default_root_dir=cfg.paths.output_dir,
    )
    return Run(datamodule, module, trainer, loggers)


def fit_and_test(cfg: DictConfig, run: Run, ckpt_path: str | None) -> dict[str, float]:
    """Step 5: fit (and optionally test) a built run from ``ckpt_path``; return its final metrics."""
    trainer, module, datamodule = run.trainer, run.module, run.datamodule
    if ckpt_path is not None:
        check_fits(Path(ckpt_path), module)
    check_validation_interval(cfg, datamodule)
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        ckpt_path = None  # from here on the module holds the trained weights
    metrics = scalar_metrics(trainer)
    if str(cfg.get("optimized_metric") or "").startswith("val/") and cfg.optimized_metric not in metrics:
        # A run that stopped (max_steps) before its first validation, or train=false with a
        # checkpoint, still reports its score.
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics.update(scalar_metrics(trainer))
    if cfg.get("test", False):
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics.update(scalar_metrics(trainer))
    return metrics


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


if __name__ == "__main__":
    main()

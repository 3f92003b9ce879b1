"""One entry point for every stage of the lab: ``python train.py experiment=NAME [key=value ...]``.

The flow is the same for every stage (README "Architecture"):

1. **corpus** — the ``data.*`` corpus keys say where the text is; it is read and split by document
   (``llm_lab.data.corpus``);
2. **tokenizer** — the ``tokenizer`` group builds the run's tokenizer, trained once per corpus and
   settings and cached (``llm_lab.tokenizers.build``); the run directory gets its ``tokenizer.json``;
3. a stage without a model trains only its tokenizer, in a plain loop (``llm_lab.tokenizer_stage``);
   every other stage builds a **DataModule** (``data``), a **LightningModule** (``model``, sized by
   the data and handed the tokenizer) and a **Trainer**, fits, optionally tests,
4. and returns the metric named by ``optimized_metric``, which sweeps (grid or Optuna) optimise.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import get_class
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig

from llm_lab import sweeps, tokenizer_stage
from llm_lab.atomic import replacing
from llm_lab.callbacks.checkpoint import Interrupted
from llm_lab.callbacks.metric_check import OptimizedMetricCheck, missing_metric
from llm_lab.callbacks.optuna_pruning import OPTUNA_KEY
from llm_lab.callbacks.progress import LineProgress, StepProgressBar
from llm_lab.config import (
    Setting,
    as_config_error,
    build,
    build_each,
    call,
    check_command_line,
    check_complete,
    check_settings,
    command_word,
    keyed,
    path_key,
    plain,
    refusal,
    refused_by_library,
    register_resolvers,
    run_cli,
    unwritable,
)
from llm_lab.console import configure_console, print_and_log
from llm_lab.data.corpus import Corpus
from llm_lab.errors import ArgumentError, ConfigError, LabError, StorageError
from llm_lab.hparams import hparams_record, trial_name, varied_overrides
from llm_lab.lit.base import CLIP_BACKENDS
from llm_lab.loggers import LabTensorBoardLogger
from llm_lab.run_dir import check_fits, checkpoint_path, is_first_process, newest_checkpoint, read_checkpoint
from llm_lab.tokenizers.base import Tokenizer, load_tokenizer, tokenizer_hash
from llm_lab.tokenizers.build import build_tokenizer

register_resolvers()
log = logging.getLogger("train")
CONF = Path(__file__).resolve().parent / "conf"  # where the configs are, wherever train.py is started


@dataclass
class Run:
    """Everything a Lightning stage is made of, built from the config (see :func:`build_run`)."""

    datamodule: L.LightningDataModule
    module: L.LightningModule
    trainer: L.Trainer
    loggers: list[Logger]


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    callbacks = build_each(cfg, "callbacks")
    # A misspelt optimized_metric, said at the first validation, before the pruning callback of an
    # Optuna trial finds it missing too (first: its error has the closest logged name).
    callbacks.insert(0, OptimizedMetricCheck(cfg.get("optimized_metric")))
    if sys.stdout.isatty():
        callbacks.append(StepProgressBar())
    else:
        callbacks.append(LineProgress(every_n_steps=cfg.get("progress_every_n_steps", 50)))
    return callbacks


def swept_overrides() -> list[str]:
    """The overrides that tell this job of a sweep from the others (none for a single run)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.hydra_config import HydraConfig

    if sweeps.job_label() is None:
        return []
    command_line = get_args_parser().parse_known_args()[0].overrides
    return varied_overrides([str(o) for o in HydraConfig.get().overrides.task], command_line)


def build_loggers(cfg: DictConfig) -> list[Logger]:
    loggers = build_each(cfg, "logger")
    swept = swept_overrides()
    for logger in loggers:
        if isinstance(logger, LabTensorBoardLogger) and swept:  # TensorBoard names the run by its folder
            logger.name_trial(trial_name(swept))
    return loggers


def run_folder(cfg: DictConfig) -> Path:
    """This run's directory, absolute."""
    return Path(cfg.paths.output_dir).resolve()


def from_cwd(path: Path) -> Path:
    """``path`` relative to where the command was started when it lies below it: what a user types."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``ckpt_path`` may be a checkpoint file, a run directory (its newest checkpoint by step), or
    ``last``: this run folder's newest checkpoint if it has one, else a fresh start (the same
    command relaunched by a cluster after pre-emption, with ``hydra.run.dir`` fixed)."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        if not any((output_dir / "checkpoints").glob("*.ckpt")):
            log.info("ckpt_path=last: no checkpoint in %s yet, so training starts at step 0", output_dir)
            return None
        ckpt_path = str(output_dir)
    return str(checkpoint_path(ckpt_path))


def check_steps_left(trainer: DictConfig, ckpt_path: Path, step: int) -> None:
    """Refuse a resume whose ``trainer.max_steps`` the checkpoint has already passed: Lightning
    would stop at once and call the run finished. Equal is a resume that only finishes the run
    (the final validation or test stage an interrupt cut short)."""
    max_steps = trainer.get("max_steps", -1)
    if isinstance(max_steps, int) and max_steps != -1 and max_steps < step:
        raise ConfigError(
            "trainer.max_steps",
            f"{max_steps}, and {ckpt_path} is at step {step} already: nothing is left to train",
            f"raise trainer.max_steps above {step}",
        )


def check_same_tokenizer(ckpt_path: Path, tokenizer: Tokenizer) -> None:
    """Refuse to resume a checkpoint with another tokenizer than the one its run saved beside it
    (changed data.* or tokenizer.* settings train a new one): its ids would mean other tokens."""
    saved = ckpt_path.parent.parent / "tokenizer.json"
    if saved.is_file() and tokenizer_hash(load_tokenizer(saved)) != tokenizer_hash(tokenizer):
        raise ConfigError(
            "ckpt_path",
            f"{ckpt_path} was trained with {saved}, and this run's data.* and tokenizer.* settings "
            "give another tokenizer",
            "resume with the settings of the run you resume (its .hydra/overrides.yaml)",
        )


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def read_corpus(cfg: DictConfig) -> Corpus:
    """Step 1: the corpus the ``data.*`` corpus keys describe (streamed, split by document)."""
    source = cfg.data.get("path")
    if source is not None and Path(source).expanduser().resolve().is_dir():
        run_dir = Path(cfg.paths.output_dir).resolve()
        if run_dir.is_relative_to(Path(source).expanduser().resolve()):
            raise ConfigError(
                "hydra.run.dir",
                f"{run_dir} is inside the corpus folder data.path={source}",
                "write runs outside it, e.g. to the default outputs/<experiment>/runs/",
            )
    with keyed(cfg.data, cfg):
        return Corpus.from_settings(plain(cfg.data))


def make_tokenizer(cfg: DictConfig, corpus: Corpus) -> Tokenizer:
    """Step 2: the run's tokenizer, trained on the training documents or found in the cache."""
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
    return tokenizer


# Keys of conf/trainer/ that are the lab's settings, not arguments of lightning.Trainer.
TRAINER_LAB_KEYS = ("gradient_clip_backend", "float32_matmul_precision")
MATMUL_PRECISIONS = ("highest", "high", "medium")


def set_matmul_precision(trainer: DictConfig) -> None:
    """float32 matrix products on a CUDA GPU at ``trainer.float32_matmul_precision``: ``high`` runs them
    on the TF32 tensor cores (torch.set_float32_matmul_precision). A CPU run keeps full float32."""
    precision = trainer.get("float32_matmul_precision", "highest")
    if precision not in MATMUL_PRECISIONS:
        raise ConfigError(
            "trainer.float32_matmul_precision",
            f"unknown value {precision!r}",
            f"use one of {', '.join(MATMUL_PRECISIONS)}",
        )
    if str(trainer.get("accelerator")) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        torch.set_float32_matmul_precision(precision)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def time_limit(max_time: Any) -> timedelta | None:
    """``trainer.max_time`` in the forms Lightning takes (``DD:HH:MM:SS``, or a mapping such as
    ``{minutes: 30}``) as a duration; None when unset or not readable (Lightning then says why)."""
    try:
        if isinstance(max_time, str):
            days, hours, minutes, seconds = (float(part) for part in max_time.split(":"))
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if isinstance(max_time, Mapping):
            return timedelta(**{str(k): v for k, v in max_time.items()})
    except (ValueError, TypeError):
        return None
    return max_time if isinstance(max_time, timedelta) else None


def check_trainer(trainer: DictConfig) -> None:
    """Settings Lightning accepts but that cannot give a result here, each with its way out."""
    if trainer.get("gradient_clip_backend", "torch") not in CLIP_BACKENDS:
        raise ConfigError(
            "trainer.gradient_clip_backend",
            f"unknown value {trainer.gradient_clip_backend!r}",
            f"use one of {', '.join(CLIP_BACKENDS)}",
        )
    for key in ("max_steps", "max_epochs"):
        if trainer.get(key) == 0:
            raise ConfigError(f"trainer.{key}", "0 trains nothing", "use -1 (no limit) or a positive number")
    # Values Lightning takes without complaint but that train nothing, silently change the run, or
    # end in a ZeroDivisionError deep inside it. A word where a number belongs is left to
    # build()'s type check, which names it.
    not_positive = {
        "limit_train_batches": ("trains nothing", "use a positive count or fraction (1.0: every batch)"),
        "val_check_interval": ("validates never, and Lightning divides by it", "use a positive count"),
        "accumulate_grad_batches": ("takes no optimizer step", "use 1 (no accumulation) or more"),
    }
    for key, (problem, fix) in not_positive.items():
        value = trainer.get(key)
        if is_number(value) and value <= 0:
            raise ConfigError(f"trainer.{key}", f"{value} {problem}", fix)
    clip = trainer.get("gradient_clip_val")
    if is_number(clip) and clip < 0:  # Lightning reads a negative norm as "no clipping"
        raise ConfigError(
            "trainer.gradient_clip_val",
            f"{clip} < 0 clips nothing",
            "use a positive norm, or null for no clipping",
        )
    budget = time_limit(trainer.get("max_time"))
    if budget is not None and budget <= timedelta(0):
        raise ConfigError(
            "trainer.max_time",
            f"a budget of {budget.total_seconds():g} s leaves no time to train",
            "use a positive duration: DD:HH:MM:SS such as 00:00:30:00, or {minutes: 30}",
        )
    if str(trainer.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            "this machine has no CUDA device",
            "use trainer=cpu, or trainer=ddp_cpu for several processes",
        )


def build_run(cfg: DictConfig, corpus: Corpus | None = None, tokenizer: Tokenizer | None = None) -> Run:
    """Step 3: DataModule (from ``corpus`` and ``tokenizer`` when the data is text), LightningModule
    sized by the data, loggers, callbacks and Trainer."""
    net = cfg.model.get("net") if isinstance(cfg.model.get("net"), DictConfig) else None
    window, limit = cfg.data.get("context_length"), net.get("context_length") if net is not None else None
    if isinstance(window, int) and isinstance(limit, int) and window > limit:
        # Said here, before anything is built; the model itself would only refuse the first batch.
        raise ConfigError(
            "data.context_length",
            f"windows of {window} tokens are longer than the model's model.net.context_length={limit}",
            "keep them equal: model.net.context_length follows data.context_length unless set",
        )
    data: dict[str, Any] = {}
    if tokenizer is not None:
        # The corpus keys of a data/*.yaml were read in step 1; the DataModule takes the corpus
        # itself, and of those keys only what it also accepts (the seed of its example order).
        accepted = inspect.signature(get_class(cfg.data._target_)).parameters
        exclude = [k for k in Corpus.setting_names() if k not in accepted]
        datamodule = call(cfg.data, cfg, exclude=exclude, corpus=corpus, tokenizer=tokenizer)
    else:
        datamodule = build(cfg.data, cfg)
    with keyed(cfg.data, cfg):
        datamodule.setup("fit")
    if tokenizer is not None:
        data["tokenizer"] = tokenizer
    optim: dict[str, Any] = {}
    if cfg.get("optimizer") is not None:
        optim["optimizer"] = check_optimizer(cfg, build(cfg.optimizer, cfg))
    if cfg.get("scheduler") is not None:
        optim["scheduler"] = build(cfg.scheduler, cfg)
    module = build(cfg.model, cfg, **optim, **data, **datamodule.model_kwargs())
    module.gradient_clip_backend = cfg.trainer.get("gradient_clip_backend", "torch")
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, build_callbacks(cfg), loggers)
    return Run(datamodule, module, trainer, loggers)


def check_optimizer(cfg: DictConfig, factory: Any) -> Any:
    """The optimizer factory, tried on one throw-away parameter: torch checks its values only when
    an optimizer is made (in configure_optimizers, after the data and the model are built), so a
    bad ``optimizer.betas`` is said here, first, naming the key its message speaks of."""
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except ValueError as err:
        if isinstance(err, ArgumentError):
            raise as_config_error(err, cfg.optimizer, cfg) from None
        raise refusal(cfg.optimizer, str(err)) from None
    return factory


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger]) -> L.Trainer:
    """The Trainer of ``cfg.trainer``, writing into the run directory."""
    trainer: L.Trainer = build(
        cfg.trainer,
        cfg,
        exclude=list(TRAINER_LAB_KEYS),  # the lab's own trainer settings, not Trainer arguments
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=sys.stdout.isatty(),
        default_root_dir=cfg.paths.output_dir,
    )
    return trainer


def fit(cfg: DictConfig, run: Run, ckpt_path: str | None) -> dict[str, float]:
    """Fit (and optionally test) a built run, from ``ckpt_path`` (resolved); return its final metrics."""
    trainer, module, datamodule = run.trainer, run.module, run.datamodule
    if ckpt_path not in (None, "last"):
        check_fits(Path(ckpt_path), module)
    if cfg.get("train", True):
        with refused_by_library(cfg.trainer):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        ckpt_path = None  # from here on the module holds the trained weights
    metrics = scalar_metrics(trainer)
    target = cfg.get("optimized_metric") or ""
    if target.startswith("val/") and target not in metrics:
        # A run that stopped (max_steps) before its first validation, or train=false with a
        # checkpoint, still reports its score.
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics.update(scalar_metrics(trainer))
    if cfg.get("test", False):
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics.update(scalar_metrics(trainer))
    return metrics


def finish(cfg: DictConfig, metrics: dict[str, float], loggers: list[Logger], net: Any = None) -> None:
    """The HParams record for TensorBoard (see ``llm_lab.hparams``), the loggers closed,
    ``metrics.json`` written, the FAILED marker of an earlier attempt removed, and a last line
    saying where the run folder is and how to look at it."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    record = hparams_record(cfg, swept_overrides(), choices, net, run_name=run_folder(cfg).name)
    for logger in loggers:
        if isinstance(logger, LabTensorBoardLogger):
            logger.log_hparams_record(record, cfg.get("optimized_metric"))
        else:
            logger.log_hyperparams(record.values)
        logger.finalize("success")
    output_dir = Path(cfg.paths.output_dir)
    with replacing(output_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (output_dir / "FAILED").unlink(missing_ok=True)  # an earlier attempt in this folder failed
    log.info(where_to_look(cfg, loggers))


def where_to_look(cfg: DictConfig, loggers: list[Logger]) -> str:
    """The last line of a run: its folder and, with a TensorBoard logger, the command that shows it
    beside the experiment's other runs (``outputs/<experiment>``), or alone when it lives elsewhere."""
    run_dir = run_folder(cfg)
    line = f"run folder: {from_cwd(run_dir)}"
    if any(isinstance(logger, TensorBoardLogger) for logger in loggers):
        experiment_dir = (Path(cfg.paths.log_dir) / cfg.task_name).resolve()
        logdir = experiment_dir if run_dir.is_relative_to(experiment_dir) else run_dir
        line += f"  (tensorboard --logdir {shlex.quote(str(from_cwd(logdir)))})"
    return line


# The top-level keys of conf/train.yaml that train.py reads itself (see config.check_settings).
SETTINGS = {
    "train": Setting("bool", "train=true fits the model, train=false only evaluates ckpt_path"),
    "test": Setting("bool", "test=true or test=false"),
    # Lightning's seed_everything replaces a seed outside 0..2^32-1 by a random one, with a warning.
    "seed": Setting("int", "use an integer in 0..4294967295, e.g. seed=42", at_least=0, at_most=2**32 - 1),
    "torch_threads": Setting("int | None", "use 1 or more threads, or null for torch's default", at_least=1),
    "progress_every_n_steps": Setting("int", "use 1 or more, e.g. progress_every_n_steps=50", at_least=1),
    "optimized_direction": Setting("str", "", choices=("minimize", "maximize")),
}


def needed_groups(cfg: DictConfig) -> list[str]:
    """The config groups a run cannot be left without an option of (``model=[]``, ``~data``). The
    others may be empty (``logger=[]``, ``callbacks=[]``), and so may the tokenizer of a stage whose
    data is not a corpus, or the optimizer of the perceptron, which learns by its own rule; an
    optimizer the experiment tunes (``optimizer.lr`` left without its ``_target_``) is needed."""
    data = cfg.get("data")
    needed = ["data", "model", "trainer", "paths"]
    if isinstance(data, DictConfig) and ("path" in data or "hf_dataset" in data):
        needed.append("tokenizer")
    for group in ("optimizer", "scheduler"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" not in node:
            needed.append(group)
    return needed


def train(cfg: DictConfig) -> dict[str, float]:
    """Run the configured stage end to end; return its final metrics."""
    check_command_line(cfg, needed_groups(cfg))
    check_complete(cfg)
    check_settings(cfg, SETTINGS)
    metric = cfg.get("optimized_metric")
    if isinstance(metric, str) and metric.startswith("test/") and not cfg.get("test"):
        # Said now: otherwise only when the run ends, after all of its training.
        raise ConfigError(
            "optimized_metric",
            f"{metric} is logged by the test stage, and test=false runs none",
            "add test=true, or optimize a val/ metric",
        )
    if cfg.get("model") is not None and not cfg.get("train", True) and cfg.get("ckpt_path") is None:
        raise ConfigError(
            "ckpt_path",
            "train=false evaluates a checkpoint, and none is given: the model would be untrained",
            "give ckpt_path=<run folder or .ckpt>, or train=true",
        )
    # A checkpoint that is not there is reported now, not after minutes of reading and tokenizing.
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.output_dir))
    # Truncated, not a checkpoint, unreadable: said now, before the corpus is read (memory-mapped).
    step = int(read_checkpoint(Path(ckpt_path)).get("global_step", 0)) if ckpt_path else 0
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; train(cfg) from a notebook may not
    if cfg.get("model") is not None:
        check_trainer(cfg.trainer)
        set_matmul_precision(cfg.trainer)
        if ckpt_path is not None and cfg.get("train", True):
            check_steps_left(cfg.trainer, Path(ckpt_path), step)
        metric = str(cfg.get("optimized_metric") or "")
        if cfg.trainer.get("limit_val_batches") == 0 and metric.startswith("val/"):
            raise ConfigError(
                "trainer.limit_val_batches",
                f"0 validates nothing, and optimized_metric={metric} is a validation metric",
                "give it a number of batches, or set optimized_metric=null",
            )
    corpus = tokenizer = None
    if cfg.get("tokenizer") is not None:
        corpus = read_corpus(cfg)
        if cfg.get("model") is None:  # a tokenizer stage: train it in a plain loop, and stop there
            loggers = build_loggers(cfg)
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
            tokenizer.save(output_dir / "tokenizer.json")
            finish(cfg, metrics, loggers)
            return metrics
        tokenizer = make_tokenizer(cfg, corpus)
        if ckpt_path is not None:
            check_same_tokenizer(Path(ckpt_path), tokenizer)
        if is_first_process():
            # Beside the checkpoints, so that generate.py finds the tokenizer of the model.
            tokenizer.save(output_dir / "tokenizer.json")
    run = build_run(cfg, corpus, tokenizer)
    metrics = fit(cfg, run, ckpt_path)
    if run.trainer.is_global_zero:
        finish(cfg, metrics, run.loggers, getattr(run.module, "net", None))
    return metrics


def resume_command(cfg: DictConfig) -> str:
    """The command line that resumes this run in its own directory from its ``last.ckpt``."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = from_cwd(run_folder(cfg))
    kept = [o for o in HydraConfig.get().overrides.task if not o.startswith(("hydra.run.dir=", "ckpt_path="))]
    words = [shlex.quote(w) for w in ["python", sys.argv[0], *kept]]
    return " ".join(
        [*words, command_word("hydra.run.dir", str(run_dir)), command_word("ckpt_path", str(run_dir))]
    )


class Terminated(BaseException):
    """SIGTERM before training installed its own handler (reading the corpus, training the
    tokenizer): Python's default would end the process without a word."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")
def main(cfg: DictConfig) -> float | None:
    configure_console()
    from hydra.core.hydra_config import HydraConfig

    label = sweeps.job_label()  # None for a single run
    if label is not None:
        sweeps.OUTCOME.started += 1
        sweeps.OUTCOME.hydra = copy.deepcopy(HydraConfig.get())  # to say what is left, if stopped
        sweeps.OUTCOME.objective = (cfg.get("optimized_metric"), cfg.get("optimized_direction"))
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = None
    try:
        metrics = train(cfg)
        return optimized_value(cfg, metrics)
    except Interrupted as stop:
        # Not a failure: the run can go on from its checkpoint. 128 + n is the shell's code for
        # "ended by signal n" (130 for Ctrl-C, 143 for SIGTERM).
        how = f"resume with:\n  {resume_command(cfg)}" if stop.step > 0 else "nothing to resume"
        if cfg.get(OPTUNA_KEY) is not None:  # an Optuna trial: its study runs it again (see below)
            how = "the trial starts again when its study resumes"
        print_and_log(f"interrupted: {stop}; {how}", logging.WARNING)
        stop_sweep(label, started=stop.step > 0)
        sys.exit(128 + stop.signum)
    except (KeyboardInterrupt, Terminated) as stop:
        # Outside the training loop: before it (corpus, tokenizer, data), or after it (the final
        # validation, the test stage), when the run folder already holds a checkpoint to go on from.
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        saved = (run_folder(cfg) / "checkpoints").is_dir() and newest_checkpoint(
            run_folder(cfg) / "checkpoints"
        ) is not None
        if saved:
            name = signal.Signals(signum).name
            how = f"resume with:\n  {resume_command(cfg)}"
            if cfg.get(OPTUNA_KEY) is not None:  # an Optuna trial: its study runs it again
                how = "the trial starts again when its study resumes"
            print_and_log(f"interrupted: {name}; {how}", logging.WARNING)
        else:
            print_and_log("interrupted before the first training step: nothing to resume", logging.WARNING)
        stop_sweep(label, started=saved)
        sys.exit(128 + signum)
    except (LabError, ArgumentError, OSError) as err:
        # A bad value in the config or the data, or a folder the run cannot write (the cache on a
        # read-only disk): one clear line, exit code 2, and a FAILED marker so the run directory
        # never looks like a finished run.
        if isinstance(err, OSError):
            if err.filename is None:
                raise
            err = StorageError(unwritable(err, cfg=cfg))
        elif isinstance(err, ArgumentError):  # raised by the library after the objects were built
            err = as_config_error(err, cfg)
        elif isinstance(err, StorageError) and err.path is not None and (key := path_key(cfg, err.path)):
            err = StorageError(f"{key}: {err}")  # the setting that put it there
        out = Path(cfg.paths.output_dir)
        with contextlib.suppress(OSError):  # the marker is a courtesy: the error line still comes
            (out / "FAILED").write_text(f"{err}\n")
        if label is None:
            print_and_log(f"error: {err}")
            sys.exit(2)
        # In a sweep the other jobs may be fine: this one is recorded as failed (the Optuna
        # sweeper finds its FAILED file, the summary lists it) and the sweep goes on; the command
        # exits 2 once every job has run (see cli).
        print_and_log(f"error: {label}: {err}")
        sweeps.OUTCOME.failed.append(HydraConfig.get().job.num)
        return None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def stop_sweep(label: str | None, started: bool) -> None:
    """After an interrupted job of a sweep (``started``: it trained a step, and its checkpoint
    resumes it): the summary of the jobs so far, which jobs did not run, and how to run them."""
    if label is None:
        return
    from hydra.core.hydra_config import HydraConfig

    sweeps.summary_so_far()
    line = sweeps.unrun_jobs_line(HydraConfig.get(), started=started)
    if line:
        print_and_log(line, logging.WARNING)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a sweep optimises: ``metrics[cfg.optimized_metric]``."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise missing_metric(name, metrics)
    return metrics[name]


def cli() -> None:
    """``python train.py [key=value ...]``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sweeps.reset_outcome()
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)  # main installs its own for each run
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = None
    try:
        run_cli(main, CONF, "train")
    except (KeyboardInterrupt, Terminated) as stop:
        # No run was going on: Hydra was setting one up, or between two jobs of a sweep.
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        last_job = sweeps.OUTCOME.hydra
        sweeps.summary_so_far()
        said = sweeps.unrun_jobs_line(last_job) if last_job is not None else None
        print(said or "interrupted before the first training step: nothing to resume", file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    line = sweeps.failed_jobs_line()
    if line is not None:  # a sweep went on past failed jobs: the command as a whole did not succeed
        print(line, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()

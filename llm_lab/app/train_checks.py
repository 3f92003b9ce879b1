"""The checks of ``train.py``'s preflight (:func:`llm_lab.app.preflight.preflight` runs them, with
the checks every entry point shares): Trainer and optimizer settings that cannot give a result, a
metric no stage logs, a resume that would train nothing, a corpus or window that cannot be read as
asked, ``init_from`` where nothing can start from it. Each looks at one part of the config and
returns (or raises) what is wrong there, as (key, problem, fix).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llm_lab.app.preflight import Check, built_nodes, earlier_run_problems
from llm_lab.config import as_config_error, parameters_of, plain, type_problems
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.lit.base import limited_batches


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


def trainer_problems(cfg: DictConfig) -> list[ConfigError]:
    """Trainer settings Lightning accepts but that cannot give a result here, each with its way out."""
    import torch

    trainer = cfg.get("trainer")
    if cfg.get("model") is None or not isinstance(trainer, DictConfig):
        return []
    problems = []
    for key in ("max_steps", "max_epochs"):
        if trainer.get(key) == 0:
            problems.append(
                ConfigError(f"trainer.{key}", "0 trains nothing", "use -1 (no limit) or a positive number")
            )
    # Values Lightning takes without complaint but that train nothing, silently change the run, or
    # end in a ZeroDivisionError deep inside it.
    not_positive = {
        "limit_train_batches": ("trains nothing", "use a positive count or fraction (1.0: every batch)"),
        "val_check_interval": ("validates never, and Lightning divides by it", "use a positive count"),
        "accumulate_grad_batches": ("takes no optimizer step", "use 1 (no accumulation) or more"),
    }
    for key, (problem, fix) in not_positive.items():
        value = trainer.get(key)
        if is_number(value) and value <= 0:
            problems.append(ConfigError(f"trainer.{key}", f"{value} {problem}", fix))
    clip = trainer.get("gradient_clip_val")
    if is_number(clip) and not 0 <= clip < math.inf:  # Lightning reads a negative norm as "no clipping"
        problems.append(
            ConfigError(
                "trainer.gradient_clip_val",
                f"{clip} clips nothing",
                "use a positive norm, or null for no clipping",
            )
        )
    budget = time_limit(trainer.get("max_time"))
    if budget is None and trainer.get("max_time") is not None:
        problems.append(
            ConfigError(
                "trainer.max_time",
                f"{trainer.max_time!r} is not a duration",
                "use DD:HH:MM:SS such as 00:00:30:00, or {minutes: 30}",
            )
        )
    devices = trainer.get("devices")
    if (
        isinstance(devices, str)
        and devices != "auto"
        and not devices.replace(",", "").replace(" ", "").isdigit()
    ):
        problems.append(
            ConfigError(
                "trainer.devices", f"{devices!r} is not a device count", "use a number, a list of ids or auto"
            )
        )
    if budget is not None and budget <= timedelta(0):
        problems.append(
            ConfigError(
                "trainer.max_time",
                f"a budget of {budget.total_seconds():g} s leaves no time to train",
                "use a positive duration: DD:HH:MM:SS such as 00:00:30:00, or {minutes: 30}",
            )
        )
    if str(trainer.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        problems.append(
            ConfigError(
                "trainer.accelerator",
                "this machine has no CUDA device",
                "use trainer=cpu, or trainer=ddp_cpu for several processes",
            )
        )
    unbounded = trainer.get("max_steps", -1) in (-1, None) and trainer.get("max_epochs") in (-1, None)
    if cfg.get("scheduler") is not None and unbounded and trainer.get("max_time") is None:
        problems.append(
            ConfigError(
                "trainer.max_steps",
                "the learning-rate schedule needs to know when training ends, and nothing bounds it",
                "set trainer.max_steps, trainer.max_epochs or a time budget trainer.max_time",
            )
        )
    metric = str(cfg.get("optimized_metric") or "")
    if trainer.get("limit_val_batches") == 0 and metric.startswith("val/"):
        problems.append(
            ConfigError(
                "trainer.limit_val_batches",
                f"0 validates nothing, and optimized_metric={metric} is a validation metric",
                "give it a number of batches, or set optimized_metric=null",
            )
        )
    return problems


def optimizer_problems(cfg: DictConfig) -> list[ConfigError]:
    """The optimizer's values, checked by the lab (a learning rate is a finite number >= 0, betas
    lie in [0, 1), ...), then the optimizer itself made once on a throw-away parameter: torch
    checks its values only when an optimizer is made, after the data and the model are built."""
    import torch

    node = cfg.get("optimizer")
    if not isinstance(node, DictConfig) or "_target_" not in node or cfg.get("model") is None:
        return []
    values = plain(node)
    problems = []
    ranges = {
        # Above float32's largest number the update itself overflows (torch: "cannot be converted").
        "lr": (0.0, float(torch.finfo(torch.float32).max)),
        "eps": (0.0, math.inf),
        "weight_decay": (0.0, math.inf),
        "momentum": (0.0, 1.0),
    }
    for key, (low, high) in ranges.items():
        value = values.get(key)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not (low <= value <= high and math.isfinite(value))
        ):
            problems.append(
                ConfigError(
                    f"optimizer.{key}", f"{value} is not in [{low:g}, {high:g}]", f"use a {key} in that range"
                )
            )
    betas = values.get("betas")
    if isinstance(betas, list) and (
        len(betas) != 2 or not all(is_number(b) and 0.0 <= b < 1.0 for b in betas)
    ):
        problems.append(
            ConfigError("optimizer.betas", f"{betas} is not two numbers in [0, 1)", "e.g. [0.9, 0.999]")
        )
    if problems or any(type_problems(node)):
        return problems
    from llm_lab.config import build

    try:
        build(node, cfg)([torch.nn.Parameter(torch.zeros(1))])
    except ArgumentError as err:
        return [as_config_error(err, node, cfg)]
    except ValueError as err:  # torch's own words, under the node: the key is not guessed from them
        return [ConfigError("optimizer", " ".join(str(err).split()), "check the optimizer.* values")]
    return []


def logged_metrics(cfg: DictConfig) -> set[str] | None:
    """The metrics a run of ``cfg`` logs, as its LightningModule and callbacks declare them
    (``LOGGED``); None when the module declares none (the check is then left to the run)."""
    from hydra.utils import get_object

    try:
        module = get_object(str(cfg.model._target_))
    except (ImportError, AttributeError, ValueError):
        return None
    declared = set(getattr(module, "LOGGED", ()))
    if not declared:
        return None
    for node in built_nodes(cfg).values():
        try:
            declared |= set(getattr(get_object(str(node._target_)), "LOGGED", ()))
        except (ImportError, AttributeError, ValueError):
            continue
    return declared


def metric_problems(cfg: DictConfig) -> list[ConfigError]:
    """A misspelt ``optimized_metric`` or checkpoint ``monitor``, found from the metric names the
    stage declares (before step 1, not when the run ends); a test/ metric with ``test=false``."""
    if cfg.get("model") is None or not isinstance(cfg.model, DictConfig) or "_target_" not in cfg.model:
        return []
    problems = []
    metric = cfg.get("optimized_metric")
    if isinstance(metric, str) and metric.startswith("test/") and not cfg.get("test"):
        problems.append(
            ConfigError(
                "optimized_metric",
                f"{metric} is logged by the test stage, and test=false runs none",
                "add test=true, or optimize a val/ metric",
            )
        )
    known = logged_metrics(cfg)
    if known is None:
        return problems
    wanted = {
        "optimized_metric": metric,
        "callbacks.model_checkpoint.monitor": OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor"),
    }
    for key, name in wanted.items():
        if isinstance(name, str) and name not in known and not name.startswith("lr-"):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "see the stage's metrics in TensorBoard"
            problems.append(
                ConfigError(
                    key,
                    f"{name!r} is not a metric this stage logs",
                    f"{hint} It logs: {', '.join(sorted(known))}",
                )
            )
    return problems


def resume_problems(cfg: DictConfig) -> list[ConfigError]:
    """A checkpoint that is not there, or that has nothing left to train, reported now, not after
    minutes of reading and tokenizing (a truncated or foreign file is a DataError naming it)."""

    from llm_lab.app.run_folder import resume_point
    from llm_lab.run_dir import read_checkpoint

    if cfg.get("model") is None:
        return []
    if not cfg.get("train", True) and cfg.get("ckpt_path") is None:
        return [
            ConfigError(
                "ckpt_path",
                "train=false evaluates a checkpoint, and none is given: the model would be untrained",
                "give ckpt_path=<run folder or .ckpt>, or train=true",
            )
        ]
    ckpt_path = resume_point(cfg.get("ckpt_path"), Path(cfg.paths.output_dir))
    if ckpt_path is None or not cfg.get("train", True):
        return []
    step = int(read_checkpoint(Path(ckpt_path)).get("global_step", 0))
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if isinstance(max_steps, int) and max_steps != -1 and max_steps < step:
        # Lightning would stop at once and call the run finished. Equal is a resume that only
        # finishes the run (the final validation or test stage an interrupt cut short).
        return [
            ConfigError(
                "trainer.max_steps",
                f"{max_steps}, and {ckpt_path} is at step {step} already: nothing is left to train",
                f"raise trainer.max_steps above {step}",
            )
        ]
    return []


def corpus_problems(cfg: DictConfig) -> list[ConfigError]:
    """The ``corpus`` group's values (its types were checked with every node), and a run folder
    inside the corpus folder, which every later run would read back as text."""

    from llm_lab.data.corpus import Corpus

    corpus = cfg.get("corpus")
    if not isinstance(corpus, DictConfig):
        return []
    settings = {k: v for k, v in plain(corpus).items() if not k.startswith("_")}
    try:
        Corpus(**settings)
    except ArgumentError as err:
        return [as_config_error(err, corpus, cfg)]
    except TypeError:
        return []  # an argument Corpus does not take: already named by node_problems
    source = corpus.get("path")
    if isinstance(source, str) and Path(source).expanduser().is_dir():
        run_dir = Path(cfg.paths.output_dir).resolve()
        if run_dir.is_relative_to(Path(source).expanduser().resolve()):
            return [
                ConfigError(
                    "hydra.run.dir",
                    f"{run_dir} is inside the corpus folder corpus.path={source}",
                    "write runs outside it, e.g. to the default outputs/<experiment>/runs/",
                )
            ]
    return []


def end_of_text_problems(cfg: DictConfig) -> list[ConfigError]:
    """A trained tokenizer whose ``special_tokens`` leave out the end-of-text token that the data
    separates documents with (a DataModule with ``NEEDS_END_OF_TEXT``): refused by that key now,
    not after the tokenizer was trained."""
    import shlex

    from hydra.utils import get_object

    from llm_lab.tokenizers.simple import ENDOFTEXT

    data, tokenizer = cfg.get("data"), cfg.get("tokenizer")
    if not isinstance(data, DictConfig) or not isinstance(tokenizer, DictConfig) or tokenizer.get("path"):
        return []
    special = tokenizer.get("special_tokens")
    try:
        needs = getattr(get_object(str(data.get("_target_"))), "NEEDS_END_OF_TEXT", False)
    except (ImportError, AttributeError, ValueError):
        return []
    if not needs or special is None or ENDOFTEXT in list(special):
        return []
    return [
        ConfigError(
            "tokenizer.special_tokens",
            f"{list(special)} leaves out {ENDOFTEXT}, which separates the documents of a language "
            "model's stream",
            f"keep it: {shlex.quote(f'tokenizer.special_tokens=[{chr(34)}{ENDOFTEXT}{chr(34)}]')}",
        )
    ]


def window_problems(cfg: DictConfig) -> list[ConfigError]:
    """Training windows longer than the model's context: the model itself would refuse only the
    first batch, after the corpus was prepared."""
    window = OmegaConf.select(cfg, "data.context_length")
    limit = OmegaConf.select(cfg, "model.net.context_length")
    if isinstance(window, int) and isinstance(limit, int) and window > limit:
        return [
            ConfigError(
                "data.context_length",
                f"windows of {window} tokens are longer than the model's model.net.context_length={limit}",
                "keep them equal: model.net.context_length follows data.context_length unless set",
            )
        ]
    return []


def needed_groups(cfg: DictConfig) -> list[str]:
    """The config groups a run cannot be left without an option of (``model=[]``, ``~data``). The
    others may be empty (``logger=[]``, ``callbacks=[]``), and so may the tokenizer of a stage that
    reads no corpus, or the optimizer of the perceptron, which learns by its own rule; an
    optimizer the experiment tunes (``optimizer.lr`` left without its ``_target_``) is needed."""
    needed = ["data", "model", "trainer", "paths"]
    if cfg.get("corpus") is not None:  # text is read only to be tokenized
        needed.append("tokenizer")
    for group in ("optimizer", "scheduler"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" not in node:
            needed.append(group)
    return needed


def check_validation_interval(cfg: DictConfig, datamodule: Any) -> None:
    """Lightning refuses a ``val_check_interval`` longer than an epoch only once fit begins: said now,
    from the size of the data just built."""
    interval, per_epoch = cfg.trainer.get("val_check_interval"), cfg.trainer.get("check_val_every_n_epoch")
    if not isinstance(interval, int) or isinstance(interval, bool) or per_epoch is None:
        return
    try:
        batches = len(datamodule.train_dataloader())
    except TypeError:  # a loader of unknown length: Lightning validates by count within it
        return
    batches = limited_batches(batches, cfg.trainer.get("limit_train_batches"))
    if interval > batches:
        raise ConfigError(
            "trainer.val_check_interval",
            f"{interval} is more than the {batches} training batches of an epoch",
            "use a smaller count, or count across epochs: trainer.check_val_every_n_epoch=null",
        )


def init_from_problems(cfg: DictConfig) -> list[ConfigError]:
    """``init_from`` given to a stage whose model cannot start from a pretrained language model
    (its LightningModule takes no ``pretrained``: CBoW, the MLPs, the attention lessons)."""
    target = OmegaConf.select(cfg, "model._target_")
    if cfg.get("init_from") is None or not isinstance(target, str):
        return []
    if "pretrained" in parameters_of(target):
        return []
    return [
        ConfigError(
            "init_from",
            f"{target.rsplit('.', 1)[-1]} trains its model from scratch and cannot start from another",
            "leave init_from out, or fine-tune with experiment=gpt or experiment=classify",
        )
    ]


def starting_model_problems(cfg: DictConfig) -> list[ConfigError]:
    """A stage that trains a given model further (its module's ``needs_starting_model``: DPO) run
    without ``init_from``: it would start from random weights, and its reference with them."""
    from hydra.utils import get_object

    model = cfg.get("model")
    if not isinstance(model, DictConfig) or "_target_" not in model or cfg.get("init_from") is not None:
        return []
    try:
        module = get_object(str(model._target_))
    except (ImportError, AttributeError, ValueError):
        return []
    if not getattr(module, "needs_starting_model", False):
        return []
    return [
        ConfigError(
            "init_from",
            f"{module.__name__} trains a starting model against a frozen copy of it, and none is given",
            "train one with python train.py experiment=instruct first, then add init_from=instruct "
            "(or a run folder)",
        )
    ]


TRAIN_CHECKS: tuple[Check, ...] = (
    trainer_problems,
    optimizer_problems,
    metric_problems,
    resume_problems,
    corpus_problems,
    end_of_text_problems,
    window_problems,
    earlier_run_problems,
    init_from_problems,
    starting_model_problems,
)

"""Preflight: every problem of a composed config, found before anything heavy starts (no corpus read,
no tokenizer trained, no model built) and reported at once, as one line per (key, problem, fix).

An entry point calls :func:`preflight` first with the top-level settings it reads (a table of
:class:`Setting`) and the checks of its own; each check looks at one part of the config and raises
(or returns) what is wrong there, so a config with three independent mistakes gets three lines, not
the first of them. Library constructors report a bad argument by its name through their
``check_arguments`` (a static method every such class calls first in its ``__init__``): the
preflight calls it on the node's values, and :mod:`llm_lab.config` maps the argument to its key.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from llm_lab.config import (
    COMMAND_LINE,
    as_config_error,
    parameters_of,
    plain,
    takes_any_keyword,
    type_problems,
)
from llm_lab.errors import ArgumentError, ConfigError, ConfigErrors, type_error

Check = Callable[[DictConfig], Iterable[ConfigError] | None]


@dataclass(frozen=True)
class Setting:
    """A top-level key of a script's config (``seed``, ``train``...), which no ``_target_``'s
    signature types: its type as an annotation (``"int | None"``, read by
    :func:`~llm_lab.errors.type_error`), its range or its allowed words, and the fix to print."""

    kind: str
    fix: str
    at_least: float | None = None
    at_most: float | None = None
    choices: tuple[str, ...] = ()


def preflight(
    cfg: DictConfig,
    settings: Mapping[str, Setting],
    checks: Sequence[Check] = (),
    needed: Sequence[str] = (),
) -> None:
    """Run every check on ``cfg``; raise one :class:`ConfigError` for one problem, or
    :class:`ConfigErrors` listing all of them. ``needed``: the config groups the script cannot do
    without (``model=[]`` would quietly turn a GPT run into another stage)."""
    problems: list[ConfigError] = []
    builtin: list[Check] = [
        lambda c: command_line_problems(c, needed),
        missing_values,
        lambda c: setting_problems(c, settings),
        node_problems,
        non_finite_numbers,
    ]
    for check in (*builtin, *checks):
        try:
            problems += check(cfg) or []
        except ConfigErrors as err:
            problems += err.errors
        except ConfigError as err:
            problems.append(err)
        except ArgumentError as err:
            problems.append(as_config_error(err, cfg))
    unique: list[ConfigError] = []
    for problem in problems:
        # Once per key; a key whose value is just another key's (corpus.seed: ${seed}) shares its problem.
        if problem.key not in {p.key for p in unique} and follows(cfg, problem.key) not in {
            p.key for p in unique
        }:
            unique.append(problem)
    if len(unique) == 1:
        raise unique[0]
    if unique:
        raise ConfigErrors(unique)


def follows(cfg: DictConfig, key: str) -> str | None:
    """The key whose value ``key`` takes as it is (``corpus.seed: ${seed}`` → ``seed``), or None."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig) or name not in node:
        return None
    child = node._get_node(name)
    text = str(child._value()) if child is not None else ""
    return text[2:-1] if text.startswith("${") and text.endswith("}") and ":" not in text else None


# --------------------------------------------------------------------------- the checks of every script


def command_line_problems(cfg: DictConfig, needed: Sequence[str]) -> list[ConfigError]:
    """What the command line asked for that the script cannot do: a ``needed`` group left with no
    option (``model=[]``, ``~data``), a key added where nothing reads it (``+seeds=3`` at the top,
    ``+paths.foo=1`` in a node without a ``_target_``). Below a ``_target_`` the constructor's
    signature decides (:func:`node_problems`), and a new entry of ``callbacks`` or ``logger`` is a
    node of its own."""
    problems = []
    for word in COMMAND_LINE.overrides:
        name, _, value = word.partition("=")
        group = name.removeprefix("~")
        if group in needed and (value.strip() == "[]" or name.startswith("~")):
            problems.append(
                ConfigError(
                    group,
                    f"{word} leaves no option, and a run needs one",
                    f"python {sys.argv[0]} --help lists them",
                )
            )
    for word in COMMAND_LINE.overrides:
        if not word.startswith("+") or word.startswith("++") or "=" not in word:
            continue
        key = word.split("=", 1)[0].lstrip("+")
        parts = key.split(".")
        if key in COMMAND_LINE.choices or (parts[0] in ("callbacks", "logger") and len(parts) > 1):
            continue
        above = [OmegaConf.select(cfg, ".".join(parts[:n])) for n in range(1, len(parts))]
        if any(isinstance(node, DictConfig) and "_target_" in node for node in above):
            continue
        parent = above[-1] if above else cfg
        # The keys beside it, but for itself (the + just put it there): a misspelt one is close.
        siblings = [str(k) for k in parent if str(k) != parts[-1]] if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(parts[-1], siblings, n=1)
        meant = f"; did you mean {'.'.join([*parts[:-1], close[0]])}?" if close else ""
        problems.append(
            ConfigError(
                key,
                f"no part of the lab reads it (the + added a key the config does not have){meant}",
                f"leave {word} off the command line; --cfg job prints every setting there is",
            )
        )
    return problems


def missing_values(cfg: DictConfig) -> list[ConfigError]:
    """Every ``???`` left unset (a value the config asks the user for, such as ``tokenizer.path`` of
    ``tokenizer=hf``): Hydra's instantiate would pass it on as the string ``"???"``."""
    return [
        ConfigError(key, "needs a value", f"add {key}=... to the command line")
        for key in sorted(OmegaConf.missing_keys(cfg))
    ]


def setting_problems(cfg: DictConfig, table: Mapping[str, Setting]) -> list[ConfigError]:
    """A top-level value of the wrong type or out of range: Hydra reads ``train=flase`` as a
    string, which Python takes as true, and ``seed=abc`` would fail far from the command line."""
    problems = []
    for key, setting in table.items():
        if key not in cfg or OmegaConf.is_missing(cfg, key):
            continue
        value = cfg[key]
        wrong = type_error(key, value, setting.kind)
        if wrong is not None:
            problems.append(ConfigError(key, wrong.problem, setting.fix))
        elif value is None:
            continue
        elif setting.choices and value not in setting.choices:
            problems.append(
                ConfigError(key, f"unknown value {value!r}", f"use one of {', '.join(setting.choices)}")
            )
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(ConfigError(key, f"{value} is not a finite number", setting.fix))
        elif setting.at_least is not None and value < setting.at_least:
            problems.append(ConfigError(key, f"{value} < {setting.at_least:g}", setting.fix))
        elif setting.at_most is not None and value > setting.at_most:
            problems.append(ConfigError(key, f"{value} > {setting.at_most:g}", setting.fix))
    return problems


def non_finite_numbers(cfg: DictConfig) -> list[ConfigError]:
    """Every number of the config that is NaN or infinite (``optimizer.lr=nan``,
    ``model.net.dropout=inf``, ``optimizer.betas=[nan,0.9]``): no setting of the lab means one, and
    each would pass a range check (NaN compares false) to fail far from the command line."""
    problems = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, child in value.items():
                walk(child, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list):
            for child in value:
                walk(child, key)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(ConfigError(key, f"{value} is not a finite number", "give a finite number"))

    for key in map(str, cfg):  # the top-level values are setting_problems' to check
        node = cfg._get_node(key)
        if key != "hydra" and isinstance(node, DictConfig) and not OmegaConf.is_missing(cfg, key):
            try:
                walk(plain(node), key)
            except Exception:  # noqa: BLE001 - a value that does not resolve is another check's to say
                continue
    return problems


def built_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """The nodes a script builds objects from, by key: every top-level node with a ``_target_``
    and every entry of the ``callbacks`` and ``logger`` collections."""
    nodes = {}
    for key in map(str, cfg):
        node = cfg._get_node(key)
        if not isinstance(node, DictConfig) or OmegaConf.is_missing(cfg, key):
            continue
        if "_target_" in node:
            nodes[key] = node
        elif key in ("callbacks", "logger"):
            nodes |= {
                f"{key}.{name!s}": entry
                for name, entry in node.items()
                if isinstance(entry, DictConfig) and "_target_" in entry
            }
    return nodes


def node_problems(cfg: DictConfig) -> list[ConfigError]:
    """For every node with a ``_target_``: what its signature rules out (a word where a number
    belongs, a key it takes no argument for), else what its ``check_arguments`` refuses (the class's
    own range checks, run on the values alone: nothing is built)."""
    from hydra.utils import get_object

    problems = []
    for node in built_nodes(cfg).values():
        wrong = [as_config_error(p, node, cfg) for p in type_problems(node)]
        for sub in map(str, node):
            child = node._get_node(sub)
            if isinstance(child, DictConfig) and "_target_" in child and not wrong:
                wrong += arguments_problem(child, cfg, get_object)
        problems += wrong or arguments_problem(node, cfg, get_object)
    return problems


def arguments_problem(
    node: DictConfig, cfg: DictConfig, get_object: Callable[[str], Any]
) -> list[ConfigError]:
    """The node's ``_target_``'s own ``check_arguments`` on the node's plain values, if it has one."""
    try:
        target = get_object(str(node._target_))
    except (ImportError, AttributeError, ValueError):
        return []  # Hydra names a target it cannot import when it builds the node
    # A classmethod target (GPT.from_size) is checked by its class.
    check = getattr(getattr(target, "__self__", target), "check_arguments", None)
    if check is None:
        return []
    parameters = parameters_of(check)
    takes_any = takes_any_keyword(parameters)
    values = {k: v for k, v in plain(node).items() if takes_any and not k.startswith("_") or k in parameters}
    try:
        check(**values)
    except ArgumentError as err:
        return [as_config_error(err, node, cfg)]
    except TypeError:  # a value of the wrong type: the signature check names it
        return []
    return []


def device_problems(cfg: DictConfig) -> list[ConfigError]:
    """A ``device`` this machine does not have, or a name that is no device (generate.py, evaluate.py)."""
    import torch

    try:
        device = torch.device(str(cfg.device))
    except RuntimeError:
        return [ConfigError("device", f"{cfg.device!r} is not a device", "cpu, cuda, cuda:1 or mps")]
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        return [ConfigError("device", f"this machine has no {device.type} device", "device=cpu")]
    return []


def available_bytes(device: Any) -> int | None:
    """Memory free for new tensors on ``device`` (a CUDA device's free memory, else the machine's
    MemAvailable); None where it cannot be told."""
    import torch

    if torch.device(device).type == "cuda":
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    found = [line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:")]
    return int(found[0]) * 1024 if found else None


def memory_problem(key: str, needed: int, device: Any, fix: str) -> ConfigError | None:
    """A setting (``num_samples``) whose tensors would need more memory than ``device`` has free:
    refused with the estimate, before torch tries and the machine swaps or the process is killed."""
    free = available_bytes(device)
    if free is None or needed <= free:
        return None
    return ConfigError(
        key, f"needs about {needed / 2**30:,.1f} GiB, and {device} has {free / 2**30:,.1f} GiB free", fix
    )


def earlier_run_problems(cfg: DictConfig) -> list[ConfigError]:
    """A setting that names an experiment whose finished run it reads, when there is none yet."""
    from llm_lab.app.run_folder import FROM_EARLIER_RUNS, earlier_run_file

    problems = []
    for key in FROM_EARLIER_RUNS:
        try:
            earlier_run_file(cfg, key)
        except ConfigError as err:
            problems.append(err)
    return problems

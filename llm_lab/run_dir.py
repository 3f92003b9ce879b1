"""A run directory as something to read back: its checkpoints and the model they hold.

``train.py`` writes ``<run>/checkpoints/*.ckpt``, ``<run>/tokenizer.json`` and, for language
models, ``<run>/model.safetensors`` with ``<run>/model_config.json``. Run folders travel (downloaded,
copied from a cluster), so what is read from one is data, never code: checkpoints are loaded with
``torch.load(weights_only=True)`` (tensors and plain containers only), and a model is rebuilt from
the plain settings saved beside its weights (as Hugging Face's ``config.json``), validated by the
lab's own config class — never by instantiating a class a file names.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import sys
import zipfile
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch import nn

from llm_lab.atomic import replacing
from llm_lab.config import command_word, format_value, unwritable
from llm_lab.errors import ArgumentError, ConfigError, DataError
from llm_lab.models.gpt import GPT, GPTConfig

# The nets a checkpoint may name, with their config class: the only code a run folder can reach.
NETS: dict[str, tuple[type[nn.Module], type]] = {"GPT": (GPT, GPTConfig)}
PLAIN = (int, float, str, bool, type(None))


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file as given, or the newest checkpoint (by step) of a run directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoints").is_dir():
            raise ArgumentError(
                "ckpt_path",
                f"{path} is not a run folder (no checkpoints/ in it)",
                "give a train.py run folder, outputs/<experiment>/runs/<time>, or a .ckpt file",
            )
        newest = newest_checkpoint(path / "checkpoints")
        if newest is None:
            raise ArgumentError(
                "ckpt_path", f"{path} holds no checkpoint", "it stopped before its first step"
            )
        return newest[0]
    if not path.is_file():
        raise ArgumentError("ckpt_path", f"no checkpoint at {path}", "give a .ckpt file or a run directory")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, or a DataError that names the file and what is wrong with it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as err:
        raise DataError(f"{path} is not a readable checkpoint (truncated or not a .ckpt: {err})") from None
    except pickle.UnpicklingError as err:
        raise DataError(f"{path} holds objects that are not plain data; it was not loaded ({err})") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror})") from None
    if not isinstance(checkpoint, dict):
        raise DataError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def net_record(net: nn.Module) -> dict[str, Any] | None:
    """What rebuilds ``net``: its class name and its config as plain values (None if it has none)."""
    config = getattr(net, "config", None)
    if type(net).__name__ not in NETS or not is_dataclass(config) or isinstance(config, type):
        return None
    return {"class": type(net).__name__, "config": asdict(config)}


def net_from_record(record: Any, source: Path) -> nn.Module:
    """The net a :func:`net_record` describes, with fresh weights; ``source`` names the file."""
    if (
        not isinstance(record, dict)
        or record.get("class") not in NETS
        or not isinstance(record.get("config"), dict)
    ):
        raise DataError(
            f"{source}: no model settings of a known net ({', '.join(NETS)}) in it (generating text "
            "and exporting take the language models of experiment=gpt)"
        )
    net_class, config_class = NETS[record["class"]]
    known = {f.name for f in fields(config_class)}
    settings = record["config"]
    for key, value in settings.items():
        if key not in known:
            raise DataError(f"{source}: model setting {key!r} is not one of {record['class']}'s")
        if not isinstance(value, PLAIN):
            raise DataError(f"{source}: model setting {key}={value!r} is not a plain value")
    try:
        return net_class(config_class(**settings))
    except (ArgumentError, TypeError) as err:
        raise DataError(f"{source}: model settings are invalid ({err})") from None


def load_net(path: str | Path) -> tuple[nn.Module, Path]:
    """The trained net of a checkpoint file or run directory, and the run directory."""
    file = checkpoint_path(path)
    checkpoint = read_checkpoint(file)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise DataError(f"{file} is not a Lightning checkpoint of llm_lab (it has no state_dict)")
    net = net_from_record(checkpoint.get("net"), file)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    result = net.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DataError(
            f"{file}: the weights do not fit the saved model settings "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return net, file.resolve().parent.parent


def save_model_config(net: nn.Module, folder: Path) -> None:
    """``model_config.json`` beside an exported ``model.safetensors``: the settings of the net."""
    record = net_record(net)
    if record is not None:
        with replacing(folder / "model_config.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2))


def checkpoint_step(file: Path) -> int | None:
    """The training step a checkpoint was written at (None if the file cannot be read as one)."""
    try:
        return int(torch.load(file, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - an unreadable file has no step
        return None


def newest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The checkpoint in ``folder`` with the highest step, and that step (``last.ckpt`` wins a tie)."""
    steps = {f: checkpoint_step(f) for f in sorted(folder.glob("*.ckpt"))}
    found = [(step, f.name == "last.ckpt", f) for f, step in steps.items() if step is not None]
    if not found:
        return None
    step, _, file = max(found)
    return file, step


def holds_results(run_dir: Path) -> bool:
    """Whether a run already trained here: checkpoints, or the metrics of a finished run."""
    return any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "metrics.json").is_file()


def resumes(ckpt_path: str | None, run_dir: Path) -> bool:
    """Whether ``ckpt_path`` continues the run in ``run_dir`` (``last``, the folder, or a file in it)."""
    if ckpt_path is None:
        return False
    if ckpt_path == "last":
        return True
    target = Path(ckpt_path).resolve()
    return target == run_dir.resolve() or run_dir.resolve() in target.parents


def is_first_process() -> bool:
    """Whether this is rank 0 of its run (or the only process): the one that owns the run folder.
    Lightning and torchrun tell the other processes their rank in the environment."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "RANK"))


_held_locks: list[Any] = []  # open lock files: a lock lasts as long as the process keeps the file


def release() -> None:
    """Give up the run folders this process claimed (they are free again when it exits anyway)."""
    while _held_locks:
        _held_locks.pop().close()


def folder_experiment(run_dir: Path) -> str | None:
    """The experiment a run folder was made by, from its ``.hydra/hydra.yaml`` read as plain data
    (None when there is none, or it cannot be read)."""
    try:
        record = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))
        return str(record["hydra"]["runtime"]["choices"]["experiment"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None


def claim(run_dir: Path, ckpt_path: str | None, experiment: str | None = None) -> None:
    """Make ``run_dir`` this process's: refuse a folder that another process is writing to, that
    another experiment's run is in, or that another run trained in (unless this run resumes it),
    and clear what a killed save left behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = (run_dir / ".lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(
            "hydra.run.dir",
            f"{run_dir} is in use by another run right now",
            "wait for it to end, or choose a new hydra.run.dir",
        ) from None
    earlier = folder_experiment(run_dir) if holds_results(run_dir) else None
    if earlier is not None and experiment is not None and earlier != experiment:
        # Not even to resume: its checkpoint is of another model, and its snapshot and results
        # would be overwritten before that is found out.
        lock.close()
        raise ConfigError(
            "hydra.run.dir",
            f"{run_dir} holds an experiment={earlier} run, not experiment={experiment}",
            "choose a new hydra.run.dir: a run folder holds one experiment",
        )
    if holds_results(run_dir) and not resumes(ckpt_path, run_dir):
        lock.close()
        newest = newest_checkpoint(run_dir / "checkpoints")
        what = f"a checkpoint at step {newest[1]}" if newest else "the results of a finished run"
        raise ConfigError(
            "hydra.run.dir",
            f"{run_dir} holds another run ({what})",
            f"resume it with {command_word('ckpt_path', str(run_dir))}, or choose a new hydra.run.dir",
        )
    _held_locks.append(lock)
    for leftover in (run_dir / "checkpoints").glob(".*.tmp"):
        leftover.unlink()  # a save killed half-way: never a checkpoint, never read


def unused_folder(base: Path) -> Path:
    """``base``, else ``base_2``, ``base_3``, …: the first that does not exist yet, made now.

    Clock-named run folders are to the second, and two runs can start within one (two terminals,
    a script): each gets its own folder. Making the folder is the claim (``mkdir`` fails if it
    exists), so two processes never pick the same one."""
    base.parent.mkdir(parents=True, exist_ok=True)
    folder, n = base, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}_{n}")


def clock_named(node: DictConfig) -> bool:
    """Whether ``node.dir`` (``hydra.run``, ``hydra.sweep``) is named by the clock, the default."""
    settings = OmegaConf.to_container(node, resolve=False)
    return isinstance(settings, dict) and "${now:" in str(settings.get("dir"))


class OneRunPerDirectory(Callback):
    """Hydra callback: before a single run writes anything into ``hydra.run.dir`` (its config
    snapshot included), :func:`claim` the folder; a refusal is one line and exit code 2. A
    clock-named folder that another run took within the same second gives way to the next
    :func:`unused_folder`.

    DDP processes that Lightning or torchrun start for the same run (rank > 0) share the folder of
    rank 0, which holds the claim. Sweep jobs get fresh numbered folders (and an Optuna trial
    interrupted earlier is run again in its own), so only single runs are claimed; a grid sweep's
    clock-named folder is made unused as a run's is.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_process():
            return
        try:
            experiment = config.hydra.runtime.choices.get("experiment")
            if clock_named(config.hydra.run):
                with read_write(config.hydra.run), open_dict(config.hydra.run):
                    config.hydra.run.dir = str(unused_folder(Path(config.hydra.run.dir)))
            claim(Path(config.hydra.run.dir), config.get("ckpt_path"), experiment)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:  # the folder cannot be made (a file in its place, /proc/...)
            if err.filename is None:
                raise
            print(f"error: {unwritable(err)}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A grid sweep's clock-named folder, likewise. Each job's config is composed again from
        # the command line's overrides, so the folder chosen joins them. A folder the user named
        # that holds an earlier grid's jobs is refused: job 0 would write into job 0's folder.
        # (An Optuna study's folder is reused on purpose: the same command resumes the study.)
        if not clock_named(config.hydra.sweep):
            sweep_dir = Path(config.hydra.sweep.dir)
            grid = str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper")
            earlier = sweep_dir.is_dir() and (
                holds_results(sweep_dir) or any(holds_results(job) for job in sweep_dir.iterdir())
            )
            if grid and earlier:
                print(
                    f"error: hydra.sweep.dir: {sweep_dir} holds an earlier run or sweep (choose a "
                    "new hydra.sweep.dir, or leave it out: each sweep then gets a folder of its own)",
                    file=sys.stderr,
                )
                sys.exit(2)
            return
        folder = str(unused_folder(Path(config.hydra.sweep.dir)))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = folder
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={format_value(folder)}")


def check_fits(file: Path, module: nn.Module) -> None:
    """Refuse to resume ``module`` from a checkpoint made for another model size: name the settings
    that differ (or, for a net without saved settings, the first tensors that do not fit)."""
    checkpoint = read_checkpoint(file)
    theirs, ours = checkpoint.get("state_dict", {}), module.state_dict()
    wrong = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    wrong += [k for k in theirs if k not in ours]
    if not wrong:
        return
    saved, current = checkpoint.get("net"), net_record(getattr(module, "net", module))
    if isinstance(saved, dict) and current is not None and isinstance(saved.get("config"), dict):
        differ = [
            f"{key}={saved['config'].get(key)!r} there, {value!r} here"
            for key, value in current["config"].items()
            if saved["config"].get(key) != value
        ]
    else:
        differ = [f"{k}: {tuple(theirs[k].shape) if k in theirs else 'absent'} there" for k in wrong[:3]]
    raise DataError(
        f"{file} was made for another model ({'; '.join(differ)}): resume with the settings it was "
        "trained with"
    )

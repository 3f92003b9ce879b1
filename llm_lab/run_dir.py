"""A run directory as something to read back: its checkpoints and the model they hold.

``train.py`` writes ``<run>/checkpoints/*.ckpt``, ``<run>/tokenizer.json`` and, for language
models, ``<run>/model.safetensors`` with ``<run>/model_config.json``. Run folders travel (downloaded,
copied from a cluster), so what is read from one is data, never code: checkpoints are loaded with
``torch.load(weights_only=True)`` (tensors and plain containers only), and a model is rebuilt from
the plain settings saved beside its weights (as Hugging Face's ``config.json``), validated by the
lab's own config class — never by instantiating a class a file names.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm_lab.atomic import replacing
from llm_lab.errors import ArgumentError, DataError
from llm_lab.models.classifier import ClassifierConfig, GPTClassifier
from llm_lab.models.gpt import GPT, GPTConfig

# The nets a checkpoint may name, with their config class: the only code a run folder can reach.
NETS: dict[str, tuple[type[nn.Module], type]] = {
    "GPT": (GPT, GPTConfig),
    "GPTClassifier": (GPTClassifier, ClassifierConfig),
}
PLAIN = (int, float, str, bool, type(None))
log = logging.getLogger(__name__)
_said: set[tuple[str, int]] = set()  # unreadable checkpoints already named (path, mtime)


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
        steps = checkpoint_steps(path / "checkpoints")
        newest = newest_of(steps)
        unreadable = [f for f, step in steps.items() if step is None]
        if newest is None and unreadable:
            try:
                read_checkpoint(unreadable[0])
            except DataError as err:
                raise DataError(
                    f"{err}; no other checkpoint of {path} is readable (move it aside to train "
                    "the run again from step 0)"
                ) from None
        if newest is None:
            raise ArgumentError(
                "ckpt_path", f"{path} holds no checkpoint", "it stopped before its first step"
            )
        later = [f for f in unreadable if f.stat().st_mtime_ns >= newest[0].stat().st_mtime_ns]
        for file in later:  # said once per file, though the preflight and the run both ask
            if (str(file), file.stat().st_mtime_ns) not in _said:
                _said.add((str(file), file.stat().st_mtime_ns))
                log.warning(
                    f"{file} cannot be read (truncated or damaged): using {newest[0]} (step {newest[1]}) "
                    f"instead; the steps after step {newest[1]} are lost (a resumed run trains them again)"
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


def non_finite_tensor(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity (None: all finite)."""
    return next(
        (
            name
            for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
        ),
        None,
    )


def refuse_non_finite(tensors: dict[str, Any], file: Path) -> None:
    """A DataError naming ``file`` and the tensor when weights are NaN or infinite: a model that
    can only produce NaN (and a resume that would train it) is refused where it is read."""
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise DataError(f"{file}: tensor {bad} holds NaN or infinite values; these weights cannot be used")


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
    lora = checkpoint.get("lora")
    if isinstance(lora, dict):  # a run that trained adapters: put them on, load, and merge them in
        from llm_lab.nn.lora import add_lora

        add_lora(net, **lora)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    refuse_non_finite(weights, file)
    result = net.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DataError(
            f"{file}: the weights do not fit the saved model settings "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    if isinstance(lora, dict):
        from llm_lab.nn.lora import merge_lora

        merge_lora(net)
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


def checkpoint_steps(folder: Path) -> dict[Path, int | None]:
    """Every checkpoint file in ``folder`` and its step (None: the file cannot be read as one)."""
    return {f: checkpoint_step(f) for f in sorted(folder.glob("*.ckpt"))}


def newest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The checkpoint in ``folder`` with the highest step, and that step (``last.ckpt`` wins a tie)."""
    return newest_of(checkpoint_steps(folder))


def newest_of(steps: dict[Path, int | None]) -> tuple[Path, int] | None:
    """Of checkpoints and their steps, the readable one with the highest step (``last.ckpt`` wins
    a tie), and its step."""
    found = [(step, f.name == "last.ckpt", f) for f, step in steps.items() if step is not None]
    if not found:
        return None
    step, _, file = max(found)
    return file, step


def check_fits(file: Path, module: nn.Module) -> None:
    """Refuse to resume ``module`` from a checkpoint made for another model size: name the settings
    that differ (or, for a net without saved settings, the first tensors that do not fit)."""
    checkpoint = read_checkpoint(file)
    theirs, ours = checkpoint.get("state_dict", {}), module.state_dict()
    refuse_non_finite(theirs, file)
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

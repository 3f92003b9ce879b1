"""A resumed run trains with the settings of its command line, not the checkpoint's.

Lightning restores from a checkpoint the optimizer's state (its moments *and* its hyperparameters:
``lr``, ``betas``, ``weight_decay``, …) and the scheduler's (its step *and* its base rates), so
``ckpt_path=last optimizer.lr=0.5`` would go on at the checkpoint's rate while the run folder's
saved overrides say 0.5. Here the configured values replace the checkpoint's before Lightning loads
them (:meth:`LabModule.on_load_checkpoint <llm_lab.lit.base.LabModule.on_load_checkpoint>`), and
:func:`adopt_settings` returns one line per changed key, e.g. ``optimizer.lr: 0.001 in the
checkpoint → 0.5 from now on``. What is kept: the optimizer's moments, and the schedule's position
(a changed rate scales the whole schedule, so the step resumes at the same point of its curve).

Another optimizer *kind* (``optimizer=sgd`` on an AdamW checkpoint) cannot reuse the moments of the
other one: the run starts a fresh optimizer state (moments at zero) at the checkpoint's step and
schedule position, and says so. A changed schedule (``scheduler.*``) has no state of its own but
its step, so it applies as configured; the settings the checkpoint was trained with are recorded
in it (:func:`training_record`) so that the change is said too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

PLAIN = (int, float, str, bool, type(None))
RECORD = "lab_training"  # the checkpoint's key for :func:`training_record`


def kind(factory: Any) -> str:
    """The optimizer or schedule a Hydra partial (or a class) builds, by name (``AdamW``)."""
    target = getattr(factory, "func", factory)
    return str(getattr(target, "__qualname__", type(target).__qualname__))


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that are plain values, lists as tuples (as optimizers keep ``betas``)."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, list | tuple) and all(isinstance(v, PLAIN) for v in value):
            value = tuple(value)
        if isinstance(value, (*PLAIN, tuple)):
            out[key] = value
    return out


def training_record(optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """What a checkpoint records of how it was trained: the optimizer's kind, and the scheduler's
    kind and settings (the partial's keywords), as plain values."""
    record: dict[str, Any] = {"optimizer": kind(type(optimizer))}
    if scheduler is not None:
        record["scheduler"] = kind(scheduler)
        record["scheduler_settings"] = _plain(dict(getattr(scheduler, "keywords", {})))
    return record


def _changed(key: str, old: Any, new: Any) -> str:
    return f"{key}: {old!r} in the checkpoint → {new!r} from now on"


def _group_lines(saved: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[str]:
    """Put the configured hyperparameters of ``fresh`` into the checkpoint's param groups ``saved``
    (in place); the line of each key that changed (once, from the first group where it did)."""
    lines: dict[str, str] = {}
    for old, new in zip(saved, fresh, strict=True):
        base_old = old.get("initial_lr", old["lr"])
        base_new = new["lr"]
        if base_old != base_new:
            lines.setdefault("lr", _changed("optimizer.lr", base_old, base_new))
            # The schedule's position is kept: the current rate scales with its base.
            old["lr"] = old["lr"] * base_new / base_old if base_old else base_new
            if "initial_lr" in old:
                old["initial_lr"] = base_new
        for key, value in new.items():
            if key in ("params", "lr", "initial_lr"):
                continue
            before = old.get(key)
            if _plain({key: before}) != _plain({key: value}):
                lines.setdefault(key, _changed(f"optimizer.{key}", before, value))
            old[key] = value
    return list(lines.values())


def adopt_settings(checkpoint: dict[str, Any], fresh: torch.optim.Optimizer, scheduler: Any) -> list[str]:
    """Make ``checkpoint`` (before Lightning restores it) resume with the settings of ``fresh``, an
    optimizer just built from the config over the same parameters, and of ``scheduler`` (the
    configured partial, or None); return one line per setting that changed (see the module doc)."""
    states = checkpoint.get("optimizer_states")
    if not states or len(states) != 1:  # weights only, or several optimizers: nothing of ours
        return []
    saved = states[0]
    if any(not isinstance(p, int) for group in saved["param_groups"] for p in group["params"]):
        return []  # a sharded (FSDP) optimizer state, keyed by names: restored as Lightning does
    record = checkpoint.get(RECORD) or {}
    fresh_state = fresh.state_dict()
    old_kind, new_kind = record.get("optimizer"), kind(type(fresh))
    groups_differ = len(saved["param_groups"]) != len(fresh_state["param_groups"]) or any(
        set(a) - {"initial_lr"} != set(b) - {"initial_lr"}
        for a, b in zip(saved["param_groups"], fresh_state["param_groups"], strict=False)
    )
    lines = []
    if (old_kind is not None and old_kind != new_kind) or groups_differ:
        # Another optimizer: its moments mean nothing to this one. Keep the schedule's position.
        for old, new in zip(saved["param_groups"], fresh_state["param_groups"], strict=False):
            scale = old["lr"] / old.get("initial_lr", old["lr"]) if old.get("initial_lr") else 1.0
            new["initial_lr"] = new["lr"]
            new["lr"] = new["lr"] * scale
        states[0] = fresh_state
        lines.append(
            f"optimizer: {old_kind or 'another optimizer'} in the checkpoint → {new_kind} from now on, "
            "with a fresh optimizer state (its moments start at zero; the step and schedule go on)"
        )
        new_groups: Iterable[dict[str, Any]] = fresh_state["param_groups"]
    else:
        lines += _group_lines(saved["param_groups"], fresh_state["param_groups"])
        new_groups = saved["param_groups"]
    for state in checkpoint.get("lr_schedulers") or []:
        if "base_lrs" in state:  # LambdaLR and kin: the schedule multiplies these
            state["base_lrs"] = [group.get("initial_lr", group["lr"]) for group in new_groups]
            state["_last_lr"] = [group["lr"] for group in new_groups]
    if scheduler is not None and "scheduler" in record:
        if record["scheduler"] != kind(scheduler):
            lines.append(_changed("scheduler", record["scheduler"], kind(scheduler)))
        else:
            now = _plain(dict(getattr(scheduler, "keywords", {})))
            before = record.get("scheduler_settings", {})
            lines += [
                _changed(f"scheduler.{k}", before.get(k), v) for k, v in now.items() if before.get(k) != v
            ]
    return lines

"""Checkpoints that survive a crash mid-write, are never poisoned, and never execute code when read.

Every checkpoint of a run goes through :class:`AtomicCheckpointIO`:
- **atomic**: Lightning's default writer writes the final file in place, so a ``kill -9`` during the
  write can leave a truncated ``last.ckpt``. Here the bytes go to a temporary file in the same
  folder, are flushed to disk, and only then replace the old checkpoint with one atomic
  ``os.replace``: at every instant the path holds either the old or the new checkpoint.
- **never poisoned**: a checkpoint whose weights or optimizer state hold NaN or infinity is not
  written (a diverged step would otherwise overwrite the last good one and be resumed from); the
  run stops with a :class:`~llm_lab.errors.DivergedError` naming the checkpoint that is still good.
- **a full disk is one line**: a failed write says which file could not be written and what is intact.
- **read as data**: ``torch.load(weights_only=True)`` refuses pickled code; a truncated or foreign
  file is a :class:`~llm_lab.errors.DataError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from llm_lab.atomic import replacing
from llm_lab.errors import DivergedError, StorageError
from llm_lab.run_dir import newest_checkpoint, read_checkpoint


def float_tensors(tree: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating-point tensor in nested dicts and lists, with its path (``state_dict.net.w``)."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            yield name, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from float_tensors(value, f"{name}.{key}" if name else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from float_tensors(value, f"{name}.{i}")


def non_finite(checkpoint: dict[str, Any]) -> list[str]:
    """The weights and optimizer states of a checkpoint that hold NaN or infinity."""
    parts = {key: checkpoint.get(key) for key in ("state_dict", "optimizer_states")}
    return [name for name, t in float_tensors(parts) if not bool(torch.isfinite(t).all())]


def last_good(folder: Path) -> str:
    """The newest checkpoint in ``folder`` as ``<path> (step 40)``, or that there is none yet."""
    newest = newest_checkpoint(folder)
    return f"{newest[0]} (step {newest[1]})" if newest else "none (no checkpoint was written before)"


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or during."""
    seen: BaseException | None = err
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _from_torch_writer(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and ("inline_container" in str(err) or "StreamWriter" in str(err))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, then rename it (:func:`llm_lab.atomic.replacing`); refuse
    non-finite weights; load with ``weights_only=True`` (see the module doc)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        bad = non_finite(checkpoint)
        if bad:
            raise DivergedError(
                f"the weights became NaN or infinite by step {checkpoint.get('global_step')} "
                f"({len(bad)} tensors, e.g. {bad[0]}); that checkpoint was not written, the last good "
                f"one is {last_good(path.parent)} (lower optimizer.lr or set trainer.gradient_clip_val, then "
                "resume with ckpt_path)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path) as tmp, tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as err:
            # A failed write (a full disk) surfaces as the OSError itself, or as a RuntimeError of
            # torch's zip writer raised while it unwinds from that OSError.
            cause = next((e for e in _chain(err) if isinstance(e, OSError)), None)
            if cause is None and not _from_torch_writer(err):
                raise
            reason = cause.strerror if cause is not None else "the write failed (is the disk full?)"
            raise StorageError(
                f"could not write {path}: {reason}; intact: {last_good(path.parent)}", path
            ) from None

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        return read_checkpoint(Path(path))

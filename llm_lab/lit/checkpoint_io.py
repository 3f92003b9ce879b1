"""Checkpoints that survive a crash mid-write and never execute code when read.

Lightning's default writer serialises to memory and then writes the final file in place, so a
``kill -9`` during the write can leave a truncated ``last.ckpt``. Here the bytes go to a temporary
file in the same folder, are flushed to disk, and only then replace the old checkpoint with one
atomic ``os.replace``: at every instant the path holds either the old or the new checkpoint.
Reading always uses ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, then ``os.replace``; load with ``weights_only=True``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

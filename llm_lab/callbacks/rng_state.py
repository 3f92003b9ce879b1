"""Random-number generator states in the checkpoint, so a resumed run draws what the original would.

Dropout masks, negative samples and sampled text all come from the global generators of torch,
numpy and Python. Lightning checkpoints do not record them, so after a restart the same step would
draw different numbers and the weights would drift from an uninterrupted run. This callback saves
the three states with every checkpoint and puts them back on resume (tensors and plain numbers only,
so the checkpoint still loads with ``weights_only=True``).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Checkpoint and restore the global torch, numpy and Python RNG states."""

    def state_dict(self) -> dict[str, Any]:
        state: Any = np.random.get_state()
        kind, keys, pos, has_gauss, cached = state
        return {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": pos,
                "has_gauss": has_gauss,
                "cached_gaussian": cached,
            },
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state(
            (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        random.setstate(state_dict["python"])

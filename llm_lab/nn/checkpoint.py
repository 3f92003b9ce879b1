"""Save and resume a plain training loop: the model's weights, the optimizer's state, the step.

To resume training exactly, the weights are not enough: AdamW's moment estimates and step counts
(``optimizer.state_dict()``) and the iteration number, which drives the learning-rate schedule,
must come back too (CS336 assignment 1 §5.2). Lightning runs write this and more (scheduler, data
position, random generators) through ``llm_lab/lit/checkpoint_io.py``; these two functions are the
same idea for a hand-written loop. Reading uses ``torch.load(weights_only=True)``, which refuses
pickled code: a checkpoint from elsewhere cannot run anything when it is opened.
"""

from __future__ import annotations

import os
from typing import IO, BinaryIO

import torch
from torch import nn

Destination = str | os.PathLike[str] | BinaryIO | IO[bytes]


def save_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int, out: Destination
) -> None:
    """Write ``{"model", "optimizer", "iteration"}`` to a path or a binary file object."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration}
    torch.save(state, out)


def load_checkpoint(src: Destination, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore ``model`` and ``optimizer`` in place from :func:`save_checkpoint`'s output; return the
    iteration it was saved at. Tensors land on the device of the parameters they belong to."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"])

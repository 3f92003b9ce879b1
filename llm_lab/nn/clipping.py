"""Gradient clipping by the global norm, written out (Pascanu, Mikolov & Bengio 2013, §3.2).

A rare batch can produce a gradient far larger than usual (a "cliff" in the loss surface), and one
step along it undoes much of the training so far. Clipping rescales the gradient when its norm
exceeds ``max_norm``: the direction is kept, only the step length is capped. The norm is *global*,
over all parameters taken as one long vector, so clipping never changes the relative sizes of the
updates of different tensors (GPT-3 clips at 1.0; Raschka appendix D.3; CS336 assignment 1 §4.5).

The library twin is ``torch.nn.utils.clip_grad_norm_``; tests/test_clipping.py pins the two together.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def clip_grad_norm(parameters: Tensor | Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> Tensor:
    """Scale the gradients in place so that their global L2 norm is at most ``max_norm``.

    Parameters without a gradient (frozen, or unused in this step) are skipped. The scale is
    ``max_norm / (norm + eps)`` when that is below 1 and nothing otherwise; ``eps`` keeps the
    division finite and puts the clipped norm just under ``max_norm``. Returns the norm *before*
    clipping (what is worth logging), as ``torch.nn.utils.clip_grad_norm_`` does.
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # The norm of the per-tensor norms is the norm of all entries together.
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = max_norm / (total_norm + eps)
    if scale < 1.0:
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return total_norm

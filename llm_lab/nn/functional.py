"""Softmax, log-softmax, cross-entropy and SiLU written out, the functions a language model trains on.

The library twins are ``torch.softmax``, ``F.log_softmax``, ``F.cross_entropy`` and ``F.silu``;
tests/test_functional.py pins each of these to its twin.

Exponentials overflow: ``exp(1000.)`` is ``inf`` in every float type, and a softmax over logits
that large would divide ``inf`` by ``inf``. Softmax does not change when the same constant is
subtracted from every entry, so subtracting the largest one first leaves the answer as it was and
keeps every exponential in (0, 1] (Raschka ch. 3.3; CS336 assignment 1 §3 and §4.1). The shift is
a constant, so it is detached: no gradient flows through the ``max``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _minus_max(x: Tensor, dim: int) -> Tensor:
    """``x`` minus its largest entry along ``dim``: every entry <= 0, so ``exp`` of it is in (0, 1]."""
    return x - x.amax(dim=dim, keepdim=True).detach()


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``exp(x_i) / sum_j exp(x_j)`` along ``dim``, for any shape, computed as ``exp(x_i - max x)``
    over the sum of those: the same numbers, without overflow for large logits."""
    exps = torch.exp(_minus_max(x, dim))
    return exps / exps.sum(dim=dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``log softmax(x)`` along ``dim`` as ``(x_i - max x) - log sum_j exp(x_j - max x)``.

    Taking the log of :func:`softmax` instead would turn a probability that underflows to 0 into
    ``-inf``; here a very unlikely entry keeps its large, finite negative value.
    """
    shifted = _minus_max(x, dim)
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)``.

    ``logits`` is ``(..., vocab_size)`` (the classes on the *last* dimension, as a language model
    emits them) and ``targets`` holds the class ids, shape ``(...)``; the mean runs over every
    position. For 2-D logits this is ``F.cross_entropy(logits, targets)``, whose classes sit on
    dimension 1 (CS336 assignment 1 §4.1; Raschka ch. 5.1.2).
    """
    log_probs = log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -picked.mean()


def silu(x: Tensor) -> Tensor:
    """SiLU (Swish): ``x * sigmoid(x)`` (Elfwing et al. 2018; Ramachandran et al. 2017), the
    activation inside SwiGLU (CS336 assignment 1 §3). ``torch.sigmoid`` is used as the
    assignment allows: it already saturates cleanly at both ends."""
    return x * torch.sigmoid(x)

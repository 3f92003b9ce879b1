"""Normalization layers: LayerNorm and RMSNorm, each written out beside its fused PyTorch twin.

Both rescale each token's feature vector independently of the other tokens and of the batch, which
is what a language model needs (batch statistics would leak information between positions).

The written-out functions (:func:`layer_norm`, :func:`rms_norm`) are the lesson: each line is one
step of the paper's formula, and each step is one pass over memory. The modules compute the same
with PyTorch's fused kernels (``F.layer_norm``, ``F.rms_norm``: one pass) unless built with
``fused=False``; the tests pin every written-out function to its twin, values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_lab.errors import ArgumentError


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm over the last dimension, written out (Ba, Kiros & Hinton 2016, §3; Raschka 4.2).

    Centre each vector, divide by its standard deviation, then apply the gain and shift. The
    variance is the biased one (divide by d, not d - 1), as in the paper and ``F.layer_norm``.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    x_hat = (x - mean) * torch.rsqrt(var + eps)
    y = x_hat * weight
    return y + bias if bias is not None else y


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dimension, written out (Zhang & Sennrich 2019, §3).

    Divide by the root mean square only (no re-centring), then apply the gain.
    """
    # The statistic in float32 at least: squaring bf16/fp16 values loses precision.
    x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    rms_inv = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (x32 * rms_inv).to(x.dtype) * weight


class LayerNorm(nn.Module):
    """Layer normalization with a gain ``weight`` and an optional shift ``bias``.

    Parameter names match ``nn.LayerNorm``, so state dicts are interchangeable. ``fused=False``
    runs the written-out :func:`layer_norm` (five kernels) instead of ``F.layer_norm`` (one).
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(d_model))
        # GPT-2 has a bias; some modern models drop it (bias=False), which saves parameters.
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, bias={self.bias is not None}, fused={self.fused}"


class RMSNorm(nn.Module):
    """Root-mean-square normalization with a gain ``weight`` (no bias), as LLaMA uses it.

    Cheaper than LayerNorm and in practice as good for Transformers. Parameter names match
    ``nn.RMSNorm``. ``fused=False`` runs the written-out :func:`rms_norm` instead of ``F.rms_norm``.
    """

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, fused={self.fused}"


NORMS = ("layernorm", "rmsnorm")


def make_norm(norm: str, d_model: int, eps: float = 1e-5, fused: bool = True) -> nn.Module:
    """Build the normalization layer named ``norm`` (``layernorm`` or ``rmsnorm``)."""
    if norm == "layernorm":
        return LayerNorm(d_model, eps, fused=fused)
    if norm == "rmsnorm":
        return RMSNorm(d_model, eps, fused=fused)
    raise ArgumentError("norm", f"unknown normalization {norm!r}", f"use one of {', '.join(NORMS)}")

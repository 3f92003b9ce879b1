"""Normalization layers written out by hand: LayerNorm and RMSNorm.

Both rescale each token's feature vector independently of the other tokens and of the batch, which
is what a language model needs (batch statistics would leak information between positions).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError


class LayerNorm(nn.Module):
    """Layer normalization (Ba, Kiros & Hinton 2016, §3; Raschka ch. 4.2).

    Each vector is centred and divided by its standard deviation over the last dimension, then an
    element-wise gain ``weight`` and shift ``bias`` are applied. The variance is the biased one
    (divide by ``d``, not ``d - 1``), as in the paper and in ``torch.nn.LayerNorm``; the parameter
    names match ``nn.LayerNorm`` so that state dicts are interchangeable.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        # GPT-2 has a bias; some modern models drop it (bias=False), which saves parameters.
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        y = x_hat * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """Root-mean-square normalization (Zhang & Sennrich 2019, §3).

    Drops LayerNorm's re-centring and divides by the root mean square only: cheaper, and in practice
    as good for Transformers (used by LLaMA). Only a gain ``weight``, no bias, matching
    ``torch.nn.RMSNorm``.
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        # Compute the statistic in float32 at least: squaring bf16/fp16 values loses precision.
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        rms_inv = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * rms_inv).to(x.dtype) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


NORMS = ("layernorm", "rmsnorm")


def make_norm(norm: str, d_model: int) -> nn.Module:
    """Build the normalization layer named by a config value (``layernorm`` or ``rmsnorm``)."""
    if norm == "layernorm":
        return LayerNorm(d_model)
    if norm == "rmsnorm":
        return RMSNorm(d_model)
    raise ArgumentError("norm", f"unknown normalization {norm!r}", f"use one of {', '.join(NORMS)}")

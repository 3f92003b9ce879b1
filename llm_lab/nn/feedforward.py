"""The position-wise feed-forward networks of a Transformer block: GPT-2's GELU MLP and SwiGLU.

The feed-forward network is applied to every token independently; it is where most of a GPT's
parameters live (two thirds of each block).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation used by GPT-2 (Hendrycks & Gimpel 2016, §2).

    GELU(x) = x·Φ(x) where Φ is the standard normal CDF; the paper approximates it by
    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), which is what OpenAI's GPT-2 code computes
    (Hugging Face calls it ``gelu_new``; Raschka ch. 4.3).
    """
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x.pow(3))))


class GELU(nn.Module):
    """Module form of :func:`gelu_tanh` (Raschka ch. 4.3)."""

    def forward(self, x: Tensor) -> Tensor:
        return gelu_tanh(x)


class FeedForward(nn.Module):
    """GPT-2's MLP: expand to ``hidden`` (4·d by default), GELU, project back (Radford et al. 2019).

    The 4× expansion is from Vaswani et al. 2017, §3.3 (d_ff = 2048 for d_model = 512). ``fc`` and
    ``proj`` correspond to Hugging Face GPT-2's ``mlp.c_fc`` and ``mlp.c_proj``.
    """

    def __init__(self, d_model: int, hidden: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden = hidden or 4 * d_model
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.act = GELU()
        self.proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class SwiGLU(nn.Module):
    """Gated feed-forward with a SiLU (Swish) gate (Shazeer 2020, "GLU Variants Improve Transformer").

    FFN(x) = W_proj (SiLU(x W_gate) ⊙ x W_up). A gate has three matrices instead of two, so the
    hidden size defaults to ⅔ of 4·d (rounded up to a multiple of 8), which keeps the parameter count
    of the 4× MLP (Shazeer 2020, §2; LLaMA, Touvron et al. 2023, §2.2).
    """

    def __init__(self, d_model: int, hidden: int | None = None, bias: bool = False) -> None:
        super().__init__()
        if hidden is None:
            hidden = 8 * ((2 * 4 * d_model // 3 + 7) // 8)
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(nn.functional.silu(self.gate(x)) * self.up(x))


MLPS = ("gelu", "swiglu")


def make_mlp(mlp: str, d_model: int, bias: bool = True) -> nn.Module:
    """Build the feed-forward network named by a config value (``gelu`` or ``swiglu``)."""
    if mlp == "gelu":
        return FeedForward(d_model, bias=bias)
    if mlp == "swiglu":
        return SwiGLU(d_model, bias=bias)
    raise ArgumentError("mlp", f"unknown feed-forward {mlp!r}", f"use one of {', '.join(MLPS)}")

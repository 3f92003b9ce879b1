"""The position-wise feed-forward networks of a Transformer block: GPT-2's GELU MLP and SwiGLU.

The feed-forward network is applied to every token independently; it is where most of a GPT's
parameters live (two thirds of each block).

The activations are written out here (:func:`gelu_tanh`, :func:`silu`) as the lesson; the modules
use PyTorch's fused twins (``F.gelu(approximate="tanh")``, ``F.silu``: one kernel instead of several)
unless built with ``fused=False``. The tests pin each written-out function to its twin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def silu(x: Tensor) -> Tensor:
    """SiLU, also called Swish: x·σ(x) (Elfwing et al. 2018; Ramachandran et al. 2017).

    A smooth ReLU that lets small negative values through; SwiGLU uses it as its gate.
    """
    return x * torch.sigmoid(x)


class FeedForward(nn.Module):
    """GPT-2's MLP: expand to ``hidden`` (4·d by default), GELU, project back (Radford et al. 2019).

    The 4× expansion is from Vaswani et al. 2017, §3.3 (d_ff = 2048 for d_model = 512). ``fc`` and
    ``proj`` correspond to Hugging Face GPT-2's ``mlp.c_fc`` and ``mlp.c_proj``.
    """

    def __init__(
        self, d_model: int, hidden: int | None = None, bias: bool = True, fused: bool = True
    ) -> None:
        super().__init__()
        hidden = hidden or 4 * d_model
        self.fused = fused
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        h = F.gelu(h, approximate="tanh") if self.fused else gelu_tanh(h)
        return self.proj(h)


def swiglu_hidden(d_model: int) -> int:
    """SwiGLU's default hidden size: ⅔ of 4·d, rounded up to a multiple of 8.

    A gate has three matrices instead of two, so ⅔ of the 4× width keeps the parameter count of
    the GELU MLP (Shazeer 2020, §2; LLaMA, Touvron et al. 2023, §2.2); multiples of 8 tile well.
    """
    return 8 * ((2 * 4 * d_model // 3 + 7) // 8)


class SwiGLU(nn.Module):
    """Gated feed-forward with a SiLU (Swish) gate (Shazeer 2020, "GLU Variants Improve Transformer").

    FFN(x) = W_proj (SiLU(x W_gate) ⊙ x W_up); ``hidden`` defaults to :func:`swiglu_hidden`.
    ``gate``, ``up`` and ``proj`` are HF LLaMA's ``gate_proj``, ``up_proj`` and ``down_proj``.
    """

    def __init__(
        self, d_model: int, hidden: int | None = None, bias: bool = False, fused: bool = True
    ) -> None:
        super().__init__()
        hidden = hidden or swiglu_hidden(d_model)
        self.fused = fused
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        g = self.gate(x)
        g = F.silu(g) if self.fused else silu(g)
        return self.proj(g * self.up(x))


MLPS = ("gelu", "swiglu")


def make_mlp(
    mlp: str, d_model: int, hidden: int | None = None, bias: bool = True, fused: bool = True
) -> nn.Module:
    """Build the feed-forward network named ``mlp`` (``gelu`` or ``swiglu``); ``hidden=None``
    takes that network's default width."""
    if mlp == "gelu":
        return FeedForward(d_model, hidden, bias, fused)
    if mlp == "swiglu":
        return SwiGLU(d_model, hidden, bias, fused)
    raise ArgumentError("mlp", f"unknown feed-forward {mlp!r}", f"use one of {', '.join(MLPS)}")

"""Position information for attention, which by itself is blind to token order.

Self-attention is permutation-equivariant: shuffle the inputs and the outputs shuffle the same way.
Three ways to tell it where each token sits:

- :class:`LearnedPositionalEmbedding` -- one trained vector per absolute position (GPT-2;
  Raschka, ch. 2.8), added to the token embeddings;
- :class:`SinusoidalPositionalEmbedding` -- fixed sines and cosines of geometric frequencies
  (Vaswani et al. 2017, §3.5), also added;
- :class:`RotaryEmbedding` -- RoPE (Su et al. 2021): rotates queries and keys so their dot product
  depends only on the relative offset between positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError


def _check_span(context_length: int, length: int, offset: int) -> None:
    if offset < 0 or offset + length > context_length:
        raise ArgumentError(
            "context_length",
            f"positions {offset}..{offset + length - 1} do not fit context_length={context_length}",
            "feed shorter sequences or build the module with a larger context_length",
        )


def check_context_length(context_length: int) -> None:
    """Raise an ArgumentError naming ``context_length`` unless it is positive."""
    if context_length <= 0:
        raise ArgumentError(
            "context_length", f"context_length={context_length} must be > 0", "use a positive length"
        )


class LearnedPositionalEmbedding(nn.Module):
    """A trainable vector per absolute position 0..context_length-1 (Raschka, ch. 2.8)."""

    def __init__(self, context_length: int, d_model: int) -> None:
        super().__init__()
        check_context_length(context_length)
        self.context_length = context_length
        self.weight = nn.Parameter(torch.empty(context_length, d_model))
        # GPT-2's initialisation: small, so positions start as a gentle nudge to the tokens.
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Embeddings of positions offset..offset+length-1, shape (length, d_model)."""
        _check_span(self.context_length, length, offset)
        # A lookup rather than a slice: a slice of a parameter taken under no_grad is a view that
        # "requires grad" with no grad_fn, which torch's module tracker (FLOP counting) rejects.
        positions = torch.arange(offset, offset + length, device=self.weight.device)
        return nn.functional.embedding(positions, self.weight)


def sinusoidal_table(context_length: int, d_model: int) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same) (Vaswani et al. 2017, §3.5).

    Wavelengths grow geometrically from 2π to 10000·2π, so for any fixed offset k, PE[pos + k] is a
    linear function (a rotation per frequency) of PE[pos] -- the reason the authors chose it.
    """
    positions = torch.arange(context_length, dtype=torch.float64)[:, None]
    even_dims = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = positions / 10000.0 ** (even_dims / d_model)  # (context_length, ceil(d/2))
    table = torch.empty(context_length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table.float()


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal position encodings (Vaswani et al. 2017, §3.5); nothing to train."""

    def __init__(self, context_length: int, d_model: int) -> None:
        super().__init__()
        check_context_length(context_length)
        self.context_length = context_length
        # Not persistent: it is a function of the shape, so checkpoints need not carry it.
        self.register_buffer("table", sinusoidal_table(context_length, d_model), persistent=False)
        self.table: Tensor

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Encodings of positions offset..offset+length-1, shape (length, d_model)."""
        _check_span(self.context_length, length, offset)
        return self.table[offset : offset + length]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", §3.2-3.4).

    Each pair of features (x_{2i}, x_{2i+1}) of a query or key at position m is rotated by the angle
    m·θ_i with θ_i = base^(-2i/d). Rotations preserve length, and ⟨R_m q, R_n k⟩ = ⟨q, R_{n-m} k⟩,
    so attention scores depend on where tokens are only through their offset n - m. (These are the
    paper's interleaved pairs; HF's LLaMA pairs feature i with i + d/2, a permutation.)
    """

    def __init__(self, head_dim: int, context_length: int, base: float = 10000.0) -> None:
        super().__init__()
        check_context_length(context_length)
        if head_dim % 2 != 0:
            raise ArgumentError(
                "head_dim",
                f"RoPE rotates pairs of features: head_dim={head_dim} is odd",
                "use an even head_dim",
            )
        self.context_length = context_length
        theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(context_length, dtype=torch.float64)[:, None] * theta  # (T, d/2)
        # Both features of pair i turn by the same angle: each column twice, (T, d).
        angles = angles.repeat_interleave(2, dim=-1)
        self.register_buffer("cos", torch.cos(angles).float(), persistent=False)
        self.register_buffer("sin", torch.sin(angles).float(), persistent=False)
        self.cos: Tensor
        self.sin: Tensor

    def angles(self, length: int, offset: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin of the angles of positions offset..offset+length-1, each (length, head_dim)."""
        _check_span(self.context_length, length, offset)
        return self.cos[offset : offset + length].to(dtype), self.sin[offset : offset + length].to(dtype)

    def rotate(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate (..., T, head_dim) features by the angles of positions offset..offset+T-1."""
        return rotate_pairs(x, *self.angles(x.shape[-2], offset, x.dtype))

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """Rotate (B, H, T, head_dim) queries and keys whose first position is ``offset``."""
        cos, sin = self.angles(q.shape[-2], offset, q.dtype)
        return rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Turn each feature pair (x_{2i}, x_{2i+1}) of (..., T, d) features by the angles whose cos
    and sin are given per position and feature, (T, d) (:meth:`RotaryEmbedding.angles`).

    RoFormer's eq. 34: R x = x ⊙ (cos mθ_1, cos mθ_1, cos mθ_2, …) + (−x_2, x_1, −x_4, x_3, …) ⊙
    (sin mθ_1, sin mθ_1, sin mθ_2, …), the 2×2 rotation of every pair in two element-wise products,
    without building the block-diagonal rotation matrix.
    """
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (−x_2, x_1, …)
    return x * cos + turned * sin

"""Self-attention, built up step by step as in Raschka, "Build a Large Language Model", ch. 3.

simplified (3.3) → trainable weights (3.4) → causal mask + dropout (3.5) → multi-head (3.6).

Every naive path calls one function, :func:`scaled_dot_product` (Vaswani et al. 2017, §3.2.1); the
``sdpa`` backend hands the same computation to PyTorch's fused
:func:`torch.nn.functional.scaled_dot_product_attention`. The GPT writes its own attention out in
place (``llm_lab.models.gpt``) and shares two pieces from here: the :class:`KVCache` of generation
and :func:`attention_weights`, which makes any net's attention layers keep their weights for a
heatmap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.positions import check_context_length

BACKENDS = ("naive", "sdpa")


def causal_mask(t_query: int, t_key: int, device: torch.device | None = None) -> Tensor:
    """Boolean (t_query, t_key) mask, True where a query may attend to a key (Raschka, ch. 3.5.1).

    The queries are the *last* ``t_query`` positions of the ``t_key`` keys (the rest come from a KV
    cache), so query ``i`` sits at absolute position ``t_key - t_query + i`` and sees keys up to it.
    """
    return torch.ones(t_query, t_key, dtype=torch.bool, device=device).tril(t_key - t_query)


def scaled_dot_product(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ · scale) v, written out (Vaswani et al. 2017, §3.2.1, eq. 1).

    Args:
        q: (..., T_q, d_k) queries; k: (..., T_k, d_k) keys; v: (..., T_k, d_v) values.
        mask: boolean, broadcastable to (..., T_q, T_k); True where attending is allowed.
        dropout_p: probability of zeroing an attention weight (Raschka, ch. 3.5.2); the survivors
            are scaled by 1/(1-p) so the expected output is unchanged.
        scale: multiplies the scores; default 1/sqrt(d_k), which keeps their variance near 1 so the
            softmax does not saturate (§3.2.1).

    Returns:
        The (..., T_q, d_v) context vectors and the (..., T_q, T_k) attention weights before dropout
        (the pattern a heatmap should show).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        # -inf becomes exactly 0 after softmax, so masked keys contribute nothing, not "little".
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights


def check_backend(backend: str) -> None:
    """Raise an ArgumentError naming ``backend`` unless it is one we implement."""
    if backend not in BACKENDS:
        raise ArgumentError(
            "backend", f"unknown attention backend {backend!r}", f"use one of {', '.join(BACKENDS)}"
        )


@contextmanager
def attention_weights(net: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Inside ``with attention_weights(net) as maps:`` every attention layer of ``net`` computes
    its weights written out (the fused kernel never materialises them) and ``maps`` collects the
    latest (B, [H,] T_q, T_k) weights of each, by the layer's name: what a heatmap draws.

    An attention layer is a module with a ``keep_weights`` flag that, when set, makes its forward
    store ``weights``; the lessons' classes below and the GPT's attention have one.
    """
    layers = [(name or "attn", m) for name, m in net.named_modules() if hasattr(m, "keep_weights")]
    maps: dict[str, Tensor] = {}

    def collect(name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            maps[name] = module.weights

        return hook

    handles = [layer.register_forward_hook(collect(name)) for name, layer in layers]
    for _, layer in layers:
        layer.keep_weights = True
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
        for _, layer in layers:
            layer.keep_weights, layer.weights = False, None


class AttentionBase(nn.Module):
    """What every attention variant of the lessons shares: validation, the mask, dropout and the
    backend switch. With ``keep_weights`` set (see :func:`attention_weights`) the naive path runs
    and keeps its weights in ``weights``."""

    def __init__(
        self,
        context_length: int | None = None,
        dropout: float = 0.0,
        causal: bool = False,
        backend: str = "naive",
    ) -> None:
        super().__init__()
        check_backend(backend)
        if not 0.0 <= dropout < 1.0:
            raise ArgumentError("dropout", f"dropout={dropout} is outside [0, 1)", "use e.g. 0.0 or 0.1")
        if context_length is not None:
            check_context_length(context_length)
        self.context_length = context_length
        self.dropout = dropout
        self.causal = causal
        self.backend = backend
        self.keep_weights = False
        self.weights: Tensor | None = None

    def _check_length(self, total: int) -> None:
        if self.context_length is not None and total > self.context_length:
            raise ArgumentError(
                "context_length",
                f"sequence of {total} tokens is longer than context_length={self.context_length}",
                "feed shorter sequences or build the module with a larger context_length",
            )

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
        """Self-attention of queries q over keys/values k, v of shape (..., T, d), per the settings."""
        dropout_p = self.dropout if self.training else 0.0
        if self.backend == "sdpa" and not self.keep_weights:
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=self.causal, scale=scale
            )
        length = q.shape[-2]
        mask = causal_mask(length, length, q.device) if self.causal else None
        out, weights = scaled_dot_product(q, k, v, mask, dropout_p, scale)
        if self.keep_weights:
            self.weights = weights.detach()
        return out


class SimplifiedSelfAttention(AttentionBase):
    """Self-attention without trainable weights (Raschka, ch. 3.3).

    Each token's context vector is a softmax-weighted sum of all inputs, weighted by dot-product
    similarity. As in the book the scores are not scaled: scaling arrives with the trainable
    version, where it is needed to keep the softmax from saturating.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d) inputs → (B, T, d) context vectors."""
        return self._attend(x, x, x, scale=1.0)


class SelfAttention(AttentionBase):
    """Scaled dot-product self-attention with trainable W_q, W_k, W_v (Raschka, ch. 3.4).

    The keyword-only arguments make it the single head that :class:`CausalSelfAttention` and
    :class:`MultiHeadAttentionWrapper` build on; left at their defaults it is the plain 3.4 module.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        qkv_bias: bool = False,
        *,
        context_length: int | None = None,
        dropout: float = 0.0,
        causal: bool = False,
        backend: str = "naive",
    ) -> None:
        super().__init__(context_length, dropout, causal, backend)
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_in) inputs → (B, T, d_out) context vectors."""
        self._check_length(x.shape[-2])
        return self._attend(self.W_query(x), self.W_key(x), self.W_value(x))


class CausalSelfAttention(SelfAttention):
    """Self-attention that cannot look ahead, with dropout on the weights (Raschka, ch. 3.5).

    Position t attends only to positions ≤ t, so a language model trained on every position at once
    never sees the token it must predict.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        backend: str = "naive",
    ) -> None:
        super().__init__(
            d_in,
            d_out,
            qkv_bias,
            context_length=context_length,
            dropout=dropout,
            causal=True,
            backend=backend,
        )


def _head_dim(d_out: int, num_heads: int) -> int:
    if num_heads <= 0 or d_out % num_heads != 0:
        raise ArgumentError(
            "num_heads",
            f"d_out={d_out} is not divisible by num_heads={num_heads}",
            "pick num_heads dividing d_out",
        )
    return d_out // num_heads


class MultiHeadAttentionWrapper(nn.Module):
    """Multi-head attention as ``num_heads`` independent single heads (Raschka, ch. 3.6.1).

    Each head has width d_out / num_heads; their outputs are concatenated and mixed by ``out_proj``
    (W^O in Vaswani et al. 2017, §3.2.2), so with the same weights this equals the fused
    :class:`MultiHeadAttention` -- the wrapper shows the idea, the fused class is the fast form.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        causal: bool = True,
        backend: str = "naive",
    ) -> None:
        super().__init__()
        head_dim = _head_dim(d_out, num_heads)
        self.heads = nn.ModuleList(
            SelfAttention(
                d_in,
                head_dim,
                qkv_bias,
                context_length=context_length,
                dropout=dropout,
                causal=causal,
                backend=backend,
            )
            for _ in range(num_heads)
        )
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_in) → (B, T, d_out)."""
        return self.out_proj(torch.cat([head(x) for head in self.heads], dim=-1))


class KVCache:
    """The keys and values one attention layer has already computed, for generation.

    Decoding token t+1 needs the keys/values of tokens ≤ t, which never change under a causal mask;
    caching them turns each generation step from O(T) projections into one.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None  # (B, H, T_cached, head_dim)
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        """Number of tokens cached so far."""
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append (B, H, T_new, head_dim) keys and values; return all cached keys and values."""
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def reset(self) -> None:
        """Forget everything (start a new sequence)."""
        self.k = self.v = None


class MultiHeadAttention(AttentionBase):
    """Multi-head attention with one fused q/k/v projection (Raschka, ch. 3.6.2; Vaswani §3.2.2).

    The GPT's attention (``llm_lab.models.gpt.Attention``) is this module grown up: the same
    projections and split into heads, plus rotary positions, a KV cache and grouped queries.

    Parameters: ``qkv`` (d_in → 3·d_out, rows ordered [q | k | v], each split into ``num_heads``
    contiguous slices of width head_dim) and ``out_proj`` (d_out → d_out, with bias) -- the layout
    of ``nn.MultiheadAttention.in_proj_weight`` and GPT-2's ``c_attn``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        causal: bool = True,
        backend: str = "sdpa",
    ) -> None:
        super().__init__(context_length, dropout, causal, backend)
        self.num_heads = num_heads
        self.head_dim = _head_dim(d_out, num_heads)
        self.d_out = d_out
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_in) → (B, T, d_out)."""
        batch, length, _ = x.shape
        self._check_length(length)
        # (B, T, 3·d_out) → three (B, H, T, head_dim): each head attends in its own subspace.
        q, k, v = (
            part.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for part in self.qkv(x).split(self.d_out, dim=-1)
        )
        context = self._attend(q, k, v)
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, self.d_out))

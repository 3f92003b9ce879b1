"""Choosing the next token from a model's logits: greedy, temperature, top-k, top-p (Raschka ch. 5.3).

Used by ``GPT.generate``; plain functions of (B, V) logits, so any language model can use them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llm_lab.errors import ArgumentError

MIN_TEMPERATURE = 1e-6  # logits of ~1e3 divided by it stay far below float32's largest number


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Set all but the ``k`` largest logits of each row to -inf (Fan et al. 2018, §5.4)."""
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020, §3.1): keep the smallest set of most likely tokens
    whose total probability reaches ``p``; the rest become -inf."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token is dropped when the tokens ranked above it already hold p; the top one never is.
    mass_above = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_above >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token id per row of (B, V) logits; ``temperature=0`` means argmax (Raschka 5.3).

    Dividing logits by the temperature sharpens (<1) or flattens (>1) the softmax.
    """
    if temperature < 0:
        raise ArgumentError("temperature", f"must be ≥ 0, got {temperature}", "0 means greedy")
    if 0 < temperature < MIN_TEMPERATURE:  # float32 logits divided by it overflow to inf, then NaN
        raise ArgumentError(
            "temperature",
            f"{temperature} is too small to divide logits by (below {MIN_TEMPERATURE:g}, sampling is "
            "greedy anyway)",
            "use 0 for greedy decoding, or a temperature of at least 1e-6",
        )
    if top_k is not None and top_k < 1:
        raise ArgumentError("top_k", f"must be ≥ 1 or null, got {top_k}", "e.g. 40, or null for every token")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ArgumentError(
            "top_p", f"must be in (0, 1] or null, got {top_p}", "e.g. 0.9, or null for no nucleus"
        )
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)

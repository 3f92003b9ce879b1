"""Forward + backward time of causal multi-head attention: naive vs sdpa vs nn.MultiheadAttention.

    python bench/bench_attention.py [--batch 8] [--d-model 256] [--heads 8] [--lengths 128 512 1024]

Prints a markdown table of median milliseconds per forward+backward step and the ratios
naive/sdpa (what the fused kernel saves over the written-out softmax(QKᵀ)V of Vaswani et al. 2017,
eq. 1) and ours-sdpa/nn.MultiheadAttention (the overhead of our module around the same kernel).
All three run on the same inputs in the same process, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import median_ms
from torch import nn

from llm_lab.nn.attention import MultiHeadAttention


def train_step(
    module: nn.Module, x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[], None]:
    """One forward + backward through ``module`` on ``x``, gradients cleared each time."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        forward(x).sum().backward()

    return step


def bench_length(
    batch: int, d_model: int, heads: int, length: int, warmup: int, repeats: int
) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(batch, length, d_model)
    ours = MultiHeadAttention(d_model, d_model, length, heads, qkv_bias=True, causal=True).train()
    ref = nn.MultiheadAttention(d_model, heads, batch_first=True).train()
    forbidden = torch.ones(length, length, dtype=torch.bool).triu(1)

    def ours_forward(backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(inputs: torch.Tensor) -> torch.Tensor:
            ours.backend = backend
            return ours(inputs)

        return forward

    def ref_forward(inputs: torch.Tensor) -> torch.Tensor:
        return ref(inputs, inputs, inputs, attn_mask=forbidden, is_causal=True, need_weights=False)[0]

    steps = {
        "naive": train_step(ours, x, ours_forward("naive")),
        "sdpa": train_step(ours, x, ours_forward("sdpa")),
        "torch": train_step(ref, x, ref_forward),
    }
    return median_ms(steps, warmup, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"causal self-attention, forward+backward, batch={args.batch}, d_model={args.d_model}, "
        f"heads={args.heads}, threads={args.threads}, median of {args.repeats} runs (ms)\n"
    )
    print("| T | naive | sdpa | nn.MultiheadAttention | naive/sdpa | sdpa/nn.MHA |")
    print("|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        t = bench_length(args.batch, args.d_model, args.heads, length, args.warmup, args.repeats)
        print(
            f"| {length} | {t['naive']:.1f} | {t['sdpa']:.1f} | {t['torch']:.1f} | "
            f"{t['naive'] / t['sdpa']:.2f} | {t['sdpa'] / t['torch']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

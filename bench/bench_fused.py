"""Eager training-step time of a GPT with PyTorch's fused kernels vs the lab's written-out formulas.

    python bench/bench_fused.py [--size lab-small] [--batch 8] [--seq-len 128] [--threads 2]

The same model, the same weights, the same batch; only ``kernels`` differs: ``fused`` runs
``F.layer_norm`` / ``F.rms_norm``, ``F.gelu(approximate="tanh")`` / ``F.silu`` and
``F.scaled_dot_product_attention``, one kernel each; ``written_out`` runs the formulas op by op
(mean, var, rsqrt, mul, add; the tanh GELU as separate ops; softmax(QKᵀ/√d)V), each op another
pass over memory. Prints median milliseconds per forward + backward step, the ratio
written_out/fused, and how many aten ops one step launches (a profiler count).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import median_ms
from torch.profiler import profile

from llm_lab.models.gpt import GPT, GPTConfig

VARIANTS = {
    "gpt2": {},
    "llama": {
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "positions": "rope",
        "qkv_bias": False,
        "attn_out_bias": False,
        "mlp_bias": False,
        "tie_embeddings": False,
    },
}


def train_step(model: GPT, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of the next-token loss on the windows ``x`` (B, T + 1)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()

    return step


def aten_ops(step: Callable[[], None]) -> int:
    """How many aten operators one call of ``step`` runs (nested ones included)."""
    with profile() as prof:
        step()
    return sum(1 for event in prof.events() if event.name.startswith("aten::"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="lab-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"{args.size}, batch {args.batch}x{args.seq_len}, vocab {args.vocab}, {args.threads} threads, "
        f"eager float32 forward+backward, median of {args.repeats} steps (ms)\n"
    )
    print("| variant | fused | written_out | written_out/fused | aten ops fused | aten ops written_out |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant, settings in VARIANTS.items():
        torch.manual_seed(0)
        x = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1))
        fused, written_out = (
            GPT(
                GPTConfig.from_name(
                    args.size, vocab_size=args.vocab, context_length=args.seq_len, kernels=kernels, **settings
                )
            ).train()
            for kernels in ("fused", "written_out")
        )
        written_out.load_state_dict(fused.state_dict())
        steps = {"fused": train_step(fused, x), "written_out": train_step(written_out, x)}
        ms = median_ms(steps, args.warmup, args.repeats)
        ops = {kernels: aten_ops(step) for kernels, step in steps.items()}
        print(
            f"| {variant} | {ms['fused']:.1f} | {ms['written_out']:.1f} | "
            f"{ms['written_out'] / ms['fused']:.2f} | {ops['fused']} | {ops['written_out']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

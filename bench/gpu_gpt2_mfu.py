"""GPT-2 124M training throughput and model FLOPs utilisation (MFU) on one GPU.

    python -m bench.gpu_gpt2_mfu [--batch 16] [--steps 20] [--no-compile] [--peak-tflops 989]
    python -m bench.gpu_gpt2_mfu --vocab 8192   # the raw-loop reference of a train.py run (vocab 8192)
    python -m bench.gpu_gpt2_mfu --smoke        # a few CPU steps of a tiny model: does it run?

A plain PyTorch loop (no Lightning) on random tokens, so it measures the model and the kernels:
bf16 autocast, the sdpa attention backend (flash attention on a recent GPU), fused AdamW, gradient
clipping and ``torch.compile``. MFU is achieved model FLOP/s over the chip's peak: FLOPs per token
6N + 12·L·H·Q·T (Chowdhery et al. 2022, PaLM, appendix B) times tokens per second; the peak is the
one ``train/mfu`` uses (``llm_lab.callbacks.throughput.peak_flops``). The default vocabulary is
GPT-2's padded to 50304 (a multiple of 128) so the output matmul tiles evenly.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from llm_lab.callbacks.throughput import peak_flops
from llm_lab.models import GPT
from llm_lab.models.gpt import GPTConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="gpt2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, lab-tiny, batch 2, 3 steps: checks the script, not the speed",
    )
    args = parser.parse_args()
    if args.smoke:
        args.size, args.batch, args.seq_len, args.steps, args.warmup = "lab-tiny", 2, 64, 3, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")

    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")  # any float32 matmul left uses the TF32 tensor cores
    config = GPTConfig.from_name(args.size, vocab_size=args.vocab, backend="sdpa")
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(
        model.param_groups(0.1), lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda"
    )
    step_model = model if args.no_compile else torch.compile(model)
    x = torch.randint(0, min(args.vocab, 50257), (args.batch, args.seq_len + 1), device=device)
    inputs, targets = x[:, :-1], x[:, 1:]

    def train_step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = step_model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # float32 under autocast
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() synchronises, so the timer sees finished work

    for _ in range(args.warmup):
        train_step()
    start = time.perf_counter()
    losses = [train_step() for _ in range(args.steps)]
    seconds = time.perf_counter() - start

    tokens_per_sec = args.steps * args.batch * args.seq_len / seconds
    achieved = model.flops_per_token(args.seq_len) * tokens_per_sec / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {name}; {args.size} ({model.num_params() / 1e6:.1f}M params), batch "
        f"{args.batch}x{args.seq_len}, bf16 autocast, sdpa, compile={not args.no_compile}"
    )
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {args.steps} steps")
    print(f"tokens/s: {tokens_per_sec:,.0f}   model TFLOP/s: {achieved:.1f}")
    peak, source = peak_flops(device, torch.bfloat16, args.peak_tflops)
    if peak is None:
        print(f"MFU: {source} (pass --peak-tflops)")
    else:
        print(f"MFU: {100 * achieved * 1e12 / peak:.1f}% of {peak / 1e12:.1f} TFLOP/s ({source})")


if __name__ == "__main__":
    main()

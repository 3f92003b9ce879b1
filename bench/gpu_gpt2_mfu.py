"""GPT-2 124M training throughput and model FLOPs utilisation (MFU) on one GPU.

    python -m bench.gpu_gpt2_mfu [--batch 16] [--steps 20] [--no-compile] [--peak-tflops 989]
    python -m bench.gpu_gpt2_mfu --smoke        # a few CPU steps of a tiny model: does it run?

A plain PyTorch loop (no Lightning) on random tokens, so it measures the model and the kernels:
bf16 autocast, the sdpa attention backend (flash attention on a recent GPU), fused AdamW and
``torch.compile``. MFU is achieved model FLOP/s over the chip's peak: FLOPs per token
6N + 12·L·H·Q·T (Chowdhery et al. 2022, PaLM, appendix B) times tokens per second.
The vocabulary is padded to 50304 (a multiple of 128) so the output matmul tiles evenly.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from llm_lab.models import GPT
from llm_lab.models.gpt import GPTConfig

# Dense bf16 tensor-core peaks from the vendors' datasheets, in TFLOP/s (no sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's bf16 peak: ``override`` if given, else looked up by its name (None if unknown)."""
    if override is not None or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((peak for chip, peak in PEAK_TFLOPS.items() if chip in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="gpt2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
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
    torch.backends.cuda.matmul.allow_tf32 = True  # any float32 matmul left uses tensor cores
    config = GPTConfig.from_name(args.size, vocab_size=50304, backend="sdpa")
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(
        model.param_groups(0.1), lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda"
    )
    step_model = model if args.no_compile else torch.compile(model)
    x = torch.randint(0, 50257, (args.batch, args.seq_len + 1), device=device)
    inputs, targets = x[:, :-1], x[:, 1:]

    def train_step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = step_model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
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
    peak = peak_tflops(device, args.peak_tflops)
    if peak is None:
        print("MFU: unknown peak for this device (pass --peak-tflops)")
    else:
        print(f"MFU: {100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s")


if __name__ == "__main__":
    main()

"""The lab's GPT against a minimal GPT-2 written with fused ops, in the same raw training loop.

    python bench/gpu_gpt_vs_reference.py [--batch 16] [--seq-len 1024] [--steps 10] [--rounds 3]
                                         [--peak-tflops 989] [--no-compile]
    python bench/gpu_gpt_vs_reference.py --smoke   # CPU, tiny shape, a few steps: does it run?

Both models are gpt2-124M shaped (vocabulary padded to 50304, a multiple of 128, so the output
matmul tiles evenly), start from the same weights (the reference's are copied from the lab's, and
both first losses are printed as a check) and train on the same random tokens with the same loop:
bf16 autocast, fused AdamW with the same parameter groups, global-norm clipping. The reference
below is the shortest fused GPT-2 (nn.LayerNorm, one qkv Linear, F.scaled_dot_product_attention,
F.gelu(approximate="tanh"), tied head) — the floor the lab's readable model is measured against.

Each mode (eager, then ``torch.compile``) builds both models, warms them up (compiling), then
alternates timed rounds of ``--steps`` steps so that drift hits both alike. Printed per model:
tokens/s, model TFLOP/s and MFU = achieved FLOP/s over the chip's peak (989 TFLOP/s: H100/H200
dense bf16) with FLOPs per token 6N + 12·L·H·Q·T (PaLM, appendix B); and lab/reference.
Targets on a GPU: compiled ≥ 1.0×, eager ≥ 0.9×.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.nn.weight_decay import weight_decay_groups


class ReferenceBlock(nn.Module):
    """One pre-LN GPT-2 block, every piece a single fused PyTorch op."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = (
            t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)
            for t in self.c_attn(self.ln_1(x)).split(width, dim=-1)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class ReferenceGPT(nn.Module):
    """GPT-2 in a few lines: embeddings, blocks, final LayerNorm, tied output head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.context_length, config.n_embd)
        self.h = nn.ModuleList(ReferenceBlock(config.n_embd, config.n_head) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: Tensor) -> Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# The lab's parameter names → the reference's (inside each block, then at the top).
BLOCK_NAMES = {
    "ln_1": "ln_1",
    "attn.qkv": "c_attn",
    "attn.out_proj": "c_proj",
    "ln_2": "ln_2",
    "mlp.fc": "c_fc",
    "mlp.proj": "mlp_proj",
}
TOP_NAMES = {"tok_emb": "wte", "pos_emb": "wpe", "ln_f": "ln_f", "lm_head": "lm_head"}


def reference_like(lab: GPT) -> ReferenceGPT:
    """A ReferenceGPT holding the lab model's weights."""
    reference = ReferenceGPT(lab.config)
    renamed = {}
    for name, tensor in lab.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if module.startswith("blocks."):
            _, i, inner = module.split(".", 2)
            renamed[f"h.{i}.{BLOCK_NAMES[inner]}.{leaf}"] = tensor
        else:
            renamed[f"{TOP_NAMES[module]}.{leaf}"] = tensor
    reference.load_state_dict(renamed)
    return reference


def training_step(model: nn.Module, compile: bool, x: Tensor) -> Callable[[], Tensor]:
    """The raw loop's step: bf16 autocast forward, float32 loss, backward, clip, fused AdamW."""
    device = x.device
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda"
    )
    forward = torch.compile(model) if compile else model

    def step() -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = forward(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, device: torch.device, compile: bool) -> dict[str, float]:
    """Tokens/s of the lab's GPT and the reference, from the same weights, in alternating rounds,
    and both models' first loss (``first_lab``, ``first_reference``)."""
    torch.manual_seed(0)
    config = GPTConfig.from_name(args.size, vocab_size=50304, context_length=args.seq_len)
    lab = GPT(config).to(device)
    models: dict[str, nn.Module] = {"lab": lab, "reference": reference_like(lab).to(device)}
    x = torch.randint(0, 50257, (args.batch, args.seq_len + 1), device=device)
    steps = {name: training_step(model, compile, x) for name, model in models.items()}
    first = {f"first_{name}": step().item() for name, step in steps.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(args.rounds):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            synchronize(device)
            seconds[name] += time.perf_counter() - start
    tokens = args.rounds * args.steps * args.batch * args.seq_len
    rates = {name: tokens / s for name, s in seconds.items()}
    return rates | first | {"flops_per_token": lab.flops_per_token()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="gpt2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation) per model")
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the chip's dense bf16 peak")
    parser.add_argument("--smoke", action="store_true", help="CPU, lab-tiny, batch 2x64, 2 steps: runs?")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.batch, args.seq_len, args.steps, args.rounds, args.warmup = "lab-tiny", 2, 64, 2, 1, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True  # any float32 matmul left uses tensor cores

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {name}; {args.size}, batch {args.batch}x{args.seq_len}, bf16 autocast, "
        f"AdamW (fused={device.type == 'cuda'}), "
        f"{args.rounds} rounds x {args.steps} steps per model"
    )
    print("| mode | model | first loss | tokens/s | TFLOP/s | MFU | lab/reference |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode in ["eager"] + ([] if args.no_compile else ["compiled"]):
        rates = measure(args, device, compile=mode == "compiled")
        for model in ("reference", "lab"):
            tflops = rates[model] * rates["flops_per_token"] / 1e12
            ratio = f"**{rates['lab'] / rates['reference']:.3f}**" if model == "lab" else ""
            print(
                f"| {mode} | {model} | {rates[f'first_{model}']:.4f} | {rates[model]:,.0f} | {tflops:.1f} | "
                f"{100 * tflops / args.peak_tflops:.1f}% | {ratio} |",
                flush=True,
            )
    print(f"targets: lab/reference ≥ 0.9 eager, ≥ 1.0 compiled; MFU of a {args.peak_tflops:g} TFLOP/s peak")
    if args.smoke:
        print("(smoke run on the CPU: checks that the script works, not the speed)")


if __name__ == "__main__":
    main()

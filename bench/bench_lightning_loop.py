"""The lab's Lightning training loop against a minimal raw PyTorch loop: same model, same batches.

    python -m bench.bench_lightning_loop [--steps 30] [--warmup 5] [--rounds 3] [--size lab-small]
    python -m bench.bench_lightning_loop --device cuda --size gpt2 --seq-len 1024 --vocab 8192 --compile

Both loops train ``NextTokenLM`` around a GPT from the same initial weights with the same AdamW
groups, warm-up + cosine schedule and gradient clipping (1.0) on the same batches. The raw loop is
forward, cross-entropy, backward, clip, step, schedule. The Lightning loop is ``Trainer.fit`` with
what ``train.py`` adds to every step of a GPT run: the module's logging (loss, gradient norm), the
throughput, finite-loss and learning-rate callbacks, line progress and a CSV logger writing every
``--log-every`` steps; no checkpoints. On a GPU the clock waits for the device at both ends of the
timed steps. Timing starts after ``--warmup`` steps (compilation included) and the two loops
alternate for ``--rounds`` rounds (medians), so load spikes on a shared CPU hit both alike. Prints
tokens/s of both and their ratio; exits with status 1 below ``--min-ratio`` (0.97; 0.95 on a GPU is
the lab's target).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.callbacks.finite_loss import FiniteLoss
from llm_lab.callbacks.progress import LineProgress
from llm_lab.callbacks.throughput import TokenThroughput
from llm_lab.lit.lm import NextTokenLM
from llm_lab.lit.schedules import warmup_cosine
from llm_lab.models import GPT


def make_module(args: argparse.Namespace) -> NextTokenLM:
    torch.manual_seed(0)  # identical initial weights for both loops
    net = functools.partial(GPT.from_size, args.size, context_length=args.seq_len, compile=args.compile)
    fused = args.device == "cuda"  # one kernel per step on a GPU (torch's default there is foreach)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1, fused=fused)
    scheduler = functools.partial(warmup_cosine, warmup_steps=10)
    return NextTokenLM(net, vocab_size=args.vocab, optimizer=optimizer, scheduler=scheduler)


def wait(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock(L.Callback):
    """Wall time from the end of step ``warmup`` to the end of the last step (device work done)."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.end = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step in (self.warmup, self.steps):
            wait(self.device)
            now = time.perf_counter()
            self.start, self.end = (now, now) if trainer.global_step == self.warmup else (self.start, now)


def lightning_loop(module: NextTokenLM, loader: DataLoader, args: argparse.Namespace) -> float:
    clock = StepClock(args.warmup, args.steps, args.device)
    run_dir = tempfile.mkdtemp()  # the module writes model.safetensors there at the end
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator=args.device,
        devices=1,
        precision=args.precision,
        gradient_clip_val=1.0,
        log_every_n_steps=args.log_every,
        logger=CSVLogger(run_dir),
        default_root_dir=run_dir,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[
            TokenThroughput(),
            FiniteLoss(),
            LearningRateMonitor(logging_interval="step"),
            LineProgress(every_n_steps=50),
            clock,
        ],
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    return clock.end - clock.start


def raw_loop(module: NextTokenLM, loader: DataLoader, args: argparse.Namespace) -> float:
    assert module.optimizer_factory is not None and module.scheduler_factory is not None
    device = torch.device(args.device)
    module.to(device).train()
    optimizer = module.optimizer_factory(module.param_groups())
    scheduler = module.scheduler_factory(optimizer, total_steps=args.steps)
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float32
    start = 0.0
    for step, (x, y) in enumerate(loader, start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = module.net(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step == args.warmup:
            wait(args.device)
            start = time.perf_counter()
        if step == args.steps:
            break
    wait(args.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="lab-small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10, help="trainer.log_every_n_steps")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default=None, help="Lightning's (default: bf16-mixed on cuda)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the GPT")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared CPU)"
    )
    parser.add_argument("--min-ratio", type=float, default=0.97)
    args = parser.parse_args()
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.set_float32_matmul_precision("high")  # train.py's trainer.float32_matmul_precision

    ids = torch.randint(
        0, args.vocab, (args.batch * args.steps, args.seq_len + 1), generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=args.batch)
    tokens = (args.steps - args.warmup) * args.batch * args.seq_len
    rates: dict[str, list[float]] = {"raw": [], "lightning": []}
    weights: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, loop in (("raw", raw_loop), ("lightning", lightning_loop)):
            module = make_module(args)
            rates[name].append(tokens / loop(module, loader, args))
            weights[name] = module.net.get_parameter("tok_emb.weight").detach().float().cpu()
    if args.device == "cpu" and args.precision == "32-true":
        # Same work: after the same steps on the same batches the weights must agree.
        torch.testing.assert_close(weights["lightning"], weights["raw"], atol=1e-5, rtol=1e-4)

    raw, lit = (statistics.median(rates[n]) for n in ("raw", "lightning"))
    print(
        f"{args.size}, batch {args.batch}x{args.seq_len}, vocab {args.vocab}, {args.device} "
        f"{args.precision}, compile={args.compile}, {args.steps - args.warmup} timed steps x "
        f"{args.rounds} rounds, {torch.get_num_threads()} threads"
    )
    for name, median in (("raw PyTorch loop", raw), ("Lightning loop", lit)):
        rounds = ", ".join(f"{r:.0f}" for r in rates[name.split()[0].lower()])
        print(f"{name + ':':17} {median:10.0f} tokens/s  (rounds: {rounds})")
    print(f"ratio:            {lit / raw:10.3f}  (target ≥ {args.min_ratio})")
    sys.exit(0 if lit / raw >= args.min_ratio else 1)


if __name__ == "__main__":
    main()

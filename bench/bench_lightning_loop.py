"""The lab's Lightning training loop against a minimal raw PyTorch loop: same model, same batches.

    python -m bench.bench_lightning_loop [--steps 30] [--warmup 5] [--rounds 3] [--size lab-small]

Both loops train ``NextTokenLM`` around a GPT from the same initial weights with the same AdamW
groups on the same fixed batches; the raw loop is forward, cross-entropy, backward, step. The
Lightning loop is ``Trainer.fit`` with the module's own logging (loss, tokens/s, grad norm) but
no checkpoints, loggers or progress bar. Timing starts after ``--warmup`` steps and the two loops
alternate for ``--rounds`` rounds (medians), so load spikes on a shared CPU hit both alike. Prints
tokens/s of both and their ratio; exits with status 1 below ``--min-ratio`` (0.97).
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
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.lit.lm import NextTokenLM
from llm_lab.models import GPT


def make_module(size: str, vocab_size: int, context_length: int) -> NextTokenLM:
    torch.manual_seed(0)  # identical initial weights for both loops
    net = functools.partial(GPT.from_size, size, context_length=context_length)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1)
    return NextTokenLM(net, vocab_size=vocab_size, optimizer=optimizer)


class StepClock(L.Callback):
    """Wall time from the end of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.start = now
        self.end = now


def lightning_loop(module: NextTokenLM, loader: DataLoader, steps: int, warmup: int) -> float:
    clock = StepClock(warmup)
    # default_root_dir: the module writes model.safetensors there at the end; not the working dir.
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=tempfile.mkdtemp(),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[clock],
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    return clock.end - clock.start


def raw_loop(module: NextTokenLM, loader: DataLoader, steps: int, warmup: int) -> float:
    assert module.optimizer_factory is not None
    optimizer = module.optimizer_factory(module.param_groups())
    module.train()
    start = 0.0
    for step, (x, y) in enumerate(loader, start=1):
        logits = module.net(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == warmup:
            start = time.perf_counter()
        if step == steps:
            break
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
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared CPU)"
    )
    parser.add_argument("--min-ratio", type=float, default=0.97)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ids = torch.randint(
        0, args.vocab, (args.batch * args.steps, args.seq_len + 1), generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=args.batch)
    tokens = (args.steps - args.warmup) * args.batch * args.seq_len
    rates: dict[str, list[float]] = {"raw": [], "lightning": []}
    weights: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, loop in (("raw", raw_loop), ("lightning", lightning_loop)):
            module = make_module(args.size, args.vocab, args.seq_len)
            rates[name].append(tokens / loop(module, loader, args.steps, args.warmup))
            weights[name] = module.net.get_parameter("tok_emb.weight").detach().clone()
    # Same work: after the same steps on the same batches the weights must agree.
    torch.testing.assert_close(weights["lightning"], weights["raw"], atol=1e-5, rtol=1e-4)

    raw, lit = (statistics.median(rates[n]) for n in ("raw", "lightning"))
    print(
        f"{args.size}, batch {args.batch}x{args.seq_len}, {args.steps - args.warmup} timed "
        f"steps x {args.rounds} rounds, {torch.get_num_threads()} threads"
    )
    for name, median in (("raw PyTorch loop", raw), ("Lightning loop", lit)):
        rounds = ", ".join(f"{r:.0f}" for r in rates[name.split()[0].lower()])
        print(f"{name + ':':17} {median:10.0f} tokens/s  (rounds: {rounds})")
    print(f"ratio:            {lit / raw:10.3f}  (target ≥ {args.min_ratio})")
    sys.exit(0 if lit / raw >= args.min_ratio else 1)


if __name__ == "__main__":
    main()

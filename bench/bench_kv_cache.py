"""Generation speed with and without the KV cache, on the CPU.

    python -m bench.bench_kv_cache [--new-tokens 256] [--prompt 16] [--repeats 3]

Without a cache every new token re-encodes the whole sequence, O(T) work per token and O(T²) in
all; with it each step encodes one token and attends over the cached keys/values (Raschka,
appendix on KV caches; Pope et al. 2022, §2). Both runs use the same model, prompt and greedy
decoding and must produce the same tokens; the script prints tokens/s of both and their ratio and
exits with status 1 if the speed-up is below ``--min-speedup`` (4×).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from llm_lab.models import GPT
from llm_lab.models.gpt import GPTConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=16, help="prompt length in tokens")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-speedup", type=float, default=4.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default because a cached step is many tiny ops, "
        "where on a busy shared CPU each thread barrier costs more than the op",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    context = args.prompt + args.new_tokens  # the cache is never dropped in this benchmark
    model = GPT(
        GPTConfig(
            vocab_size=2048,
            context_length=context,
            n_layer=args.layers,
            n_head=args.d_model // 64,
            n_embd=args.d_model,
        )
    ).eval()
    prompt = torch.randint(0, 2048, (1, args.prompt))

    seconds: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, torch.Tensor] = {}
    model.generate(prompt, 8)  # warm-up: first calls allocate and pick kernels
    for _ in range(args.repeats):
        for use_cache in (True, False):  # alternate, so load spikes hit both alike
            start = time.perf_counter()
            outputs[use_cache] = model.generate(prompt, args.new_tokens, temperature=0, use_cache=use_cache)
            seconds[use_cache].append(time.perf_counter() - start)
    assert torch.equal(outputs[True], outputs[False]), "the cache changed the generated tokens"

    rate = {c: args.new_tokens / statistics.median(s) for c, s in seconds.items()}
    ratio = rate[True] / rate[False]
    print(
        f"model: {args.layers} layers, d_model {args.d_model}, prompt {args.prompt}, "
        f"{args.new_tokens} new tokens, {torch.get_num_threads()} threads"
    )
    print(f"without cache: {rate[False]:8.1f} tokens/s")
    print(f"with cache:    {rate[True]:8.1f} tokens/s")
    print(f"speed-up:      {ratio:8.2f}x  (target ≥ {args.min_speedup}x)")
    sys.exit(0 if ratio >= args.min_speedup else 1)


if __name__ == "__main__":
    main()

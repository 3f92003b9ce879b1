"""Multiple-choice scoring speed: the lab's scorer against the lm-evaluation-harness's HF backend.

    python bench/bench_eval.py [--items 200] [--size lab-small] [--batch-size 16] [--threads 2]

Both score the same docs_mc items (4 endings each) with the same random GPT, the harness through
its ``hf`` backend on the model's Hugging Face export, the lab through :class:`Scorer` on the lab's
own GPT; each is timed on its log-likelihood requests only (loading excluded), best of
``--repeats``. Prints items per second of both, their ratio (goal ≥ 1×), and whether the two
picked the same endings. Needs the optional extra: pip install -e ".[eval]".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_lab.data.corpus import builtin_corpus  # noqa: E402
from llm_lab.eval import builtin  # noqa: E402
from llm_lab.eval.export import save_hf_folder  # noqa: E402
from llm_lab.eval.scoring import LabLM, Scorer  # noqa: E402
from llm_lab.models.gpt import GPT  # noqa: E402
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer  # noqa: E402


def best_of(repeats: int, run: object) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--size", default="lab-small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    tokenizer = FastBPETokenizer.train(1024, documents=builtin_corpus(), special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    net = GPT.from_size(args.size, vocab_size=tokenizer.vocab_size, context_length=256).eval()
    items = builtin.docs_mc()[: args.items]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_hf_folder(net, tokenizer, Path(tmp) / "hf")
        harness = HFLM(pretrained=str(folder), dtype="float32", batch_size=args.batch_size, device="cpu")
        requests = [
            Instance("loglikelihood", {}, (item.ctx, " " + ending), i)
            for i, item in enumerate(items)
            for ending in item.endings
        ]
        scorer = Scorer(LabLM(net), tokenizer, batch_size=args.batch_size)

        def ours() -> list[float]:
            pairs = [scorer.encode_pair(r.args[0], r.args[1]) for r in requests]
            return [result.value for result in scorer.loglikelihoods(pairs)]

        def theirs() -> list[float]:
            return [value for value, _ in harness.loglikelihood(requests, disable_tqdm=True)]

        lab_s, lab_lls = best_of(args.repeats, ours)
        ref_s, ref_lls = best_of(args.repeats, theirs)

    def picks(lls: object) -> list[int]:
        values = list(lls)  # type: ignore[call-overload]
        return [max(range(4), key=lambda k, i=i: values[4 * i + k]) for i in range(len(items))]

    same = sum(a == b for a, b in zip(picks(lab_lls), picks(ref_lls), strict=True))
    print(
        f"docs_mc, {len(items)} items x 4 endings, GPT {args.size} (context 256, "
        f"vocab {tokenizer.vocab_size}), "
        f"batch {args.batch_size}, {args.threads} threads, float32, best of {args.repeats}"
    )
    print()
    print("| scorer | seconds | items/s |")
    print("|---|---:|---:|")
    print(f"| lab (Scorer on the lab's GPT) | {lab_s:.2f} | {len(items) / lab_s:.1f} |")
    print(f"| lm-eval HF backend (on the export) | {ref_s:.2f} | {len(items) / ref_s:.1f} |")
    print(f"| **lab / lm-eval** | | **{ref_s / lab_s:.2f}x** (goal >= 1x) |")
    print()
    print(f"same acc pick on {same} of {len(items)} items")


if __name__ == "__main__":
    main()

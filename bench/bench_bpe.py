"""Byte-level BPE: training against HF `tokenizers`, encoding against tiktoken — readable, fast, compiled.

    python bench/bench_bpe.py [--vocab-size 8192] [--repeats 3] [--text FILE]

1. Training on ~3 MB of English Wikipedia (the sample gensim ships, XML and wiki markup stripped
   crudely) at ``--vocab-size``: the lab's fast trainer (``FastBPETokenizer.train(files=[…])``)
   against HF's ``BpeTrainer`` with a ByteLevel pre-tokenizer. Each run is a fresh subprocess that
   reports its training wall time and peak resident memory (VmHWM, plus the largest worker process
   for ours: an upper bound, since forked workers share pages with their parent); "over base"
   subtracts the memory the process held after its imports.
2. The readable trainer (``bpe.py``: every pair recounted before each merge) against the fast one
   on the first 100 kB at vocab 600, and the CS336 ``corpus.en`` at vocab 500 (if the shared
   fixtures are present; target < 0.4 s for the fast one).
3. Encoding with the trained vocabulary against ``tiktoken.Encoding`` built from the same ranks
   (single thread): the readable encoder (on the first 300 kB: it is slow by design), the fast
   Python one — "cold" is a fresh tokenizer (every distinct pre-token merged once), "warm" a
   second pass (pre-tokens come from the cache) — and the compiled paths of
   ``llm_lab.tokenizers.compiled.BatchEncoder`` (tiktoken and HF `tokenizers`, one thread).

Runs alternate between implementations so that load on a shared machine hits both; the table
shows medians and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import wikipedia_text

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "reference" / "cs336-fixtures"
EOT = "<|endoftext|>"

# Executed in a fresh interpreter: argv = [kind, text file, vocab size, output dir].
WORKER = r"""
import json, resource, sys, time
kind, text_path, vocab_size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def vm_kib(field="VmHWM"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
if kind == "hf":
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
else:
    from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
base = vm_kib("VmRSS")
start = time.perf_counter()
if kind == "hf":
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([text_path], trainer)
else:
    tok = FastBPETokenizer.train(vocab_size, files=[text_path], special_tokens=["<|endoftext|>"])
seconds = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
tok.save(f"{out}/{kind}.json")
print(json.dumps({"seconds": seconds, "peak_kib": vm_kib() + children, "base_kib": base}))
"""


def train_in_subprocess(kind: str, text_path: Path, vocab_size: int, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, kind, str(text_path), str(vocab_size), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def seconds_of(step, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text", type=Path, help="train on this UTF-8 file instead")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))  # this checkout's llm_lab, as the training subprocesses use
    from llm_lab.tokenizers.bpe import BPETokenizer
    from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
    from llm_lab.tokenizers.compiled import BatchEncoder, tiktoken_encoding

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        text_path = args.text or out / "wiki.txt"
        if args.text is None:
            text_path.write_text(wikipedia_text(), encoding="utf-8")
        text = text_path.read_text(encoding="utf-8")
        mb = len(text.encode("utf-8")) / 1e6

        runs: dict[str, list[dict]] = {"hf": [], "ours": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(train_in_subprocess(kind, text_path, args.vocab_size, out))
        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
        t_ratio = med["ours"]["seconds"] / med["hf"]["seconds"]
        rows.append(
            (
                f"train {mb:.1f} MB, vocab {args.vocab_size}: time (s)",
                f"{med['ours']['seconds']:.2f}",
                f"{med['hf']['seconds']:.2f} (HF)",
                f"{t_ratio:.2f}× (target ≤ 3×)",
            )
        )
        for label, key in [("peak RSS (MiB)", None), ("peak RSS over base (MiB)", "base_kib")]:
            ours, hf = ((m["peak_kib"] - (m[key] if key else 0)) / 1024 for m in (med["ours"], med["hf"]))
            rows.append(
                (f"train: {label}", f"{ours:.0f}", f"{hf:.0f} (HF)", f"{ours / hf:.2f}× (target ≤ 2×)")
            )

        sample = text[:100_000]
        readable_s, fast_s = (
            seconds_of(lambda c=cls: c.train(600, text=sample, num_workers=1), args.repeats)
            for cls in (BPETokenizer, FastBPETokenizer)
        )
        rows.append(
            (
                "train 100 kB, vocab 600, readable (s)",
                f"{readable_s:.2f}",
                f"{fast_s:.3f} (fast)",
                f"{readable_s / fast_s:.0f}× slower",
            )
        )
        if (FIXTURES / "corpus.en").is_file():
            corpus_en = [FIXTURES / "corpus.en"]
            seconds = seconds_of(
                lambda: FastBPETokenizer.train(500, files=corpus_en, special_tokens=[EOT]), 5
            )
            rows.append(
                (
                    "train CS336 corpus.en, vocab 500 (s)",
                    f"{seconds:.3f}",
                    "0.4 (target)",
                    f"{seconds / 0.4:.2f}× of budget",
                )
            )

        trained = FastBPETokenizer.load(out / "ours.json")
        reference = tiktoken_encoding(trained)
        compiled = {name: BatchEncoder(trained, name) for name in ("tiktoken", "hf")}
        times: dict[str, list[float]] = {
            "cold": [],
            "warm": [],
            "tiktoken": [],
            "compiled tiktoken": [],
            "compiled hf": [],
        }
        for _ in range(max(args.repeats, 5)):  # one round = a fresh tokenizer twice, then the others
            tok = FastBPETokenizer.load(out / "ours.json")
            times["cold"].append(seconds_of(lambda t=tok: t.encode(text), 1))
            times["warm"].append(seconds_of(lambda t=tok: t.encode(text), 1))
            times["tiktoken"].append(seconds_of(lambda: reference.encode_ordinary(text), 1))
            for name, encoder in compiled.items():
                times[f"compiled {name}"].append(seconds_of(lambda e=encoder: e.encode(text), 1))
        ref = statistics.median(times["tiktoken"])
        expected = reference.encode_ordinary(text)
        assert tok.encode(text) == expected, "ids differ from tiktoken"
        assert all(e.encode(text) == expected for e in compiled.values()), "compiled ids differ"
        head = text[:300_000]
        readable = BPETokenizer(trained.vocab, trained.merges, list(trained.special_tokens))
        assert readable.encode(head) == reference.encode_ordinary(head), "readable ids differ"
        readable_mb = len(head.encode()) / 1e6 / seconds_of(lambda: readable.encode(head), 1)
        ref_mb = mb / ref
        rows.append(
            (
                "encode 0.3 MB, readable: MB/s",
                f"{readable_mb:.2f}",
                f"{ref_mb:.1f} (tiktoken)",
                f"{readable_mb / ref_mb:.3f}×",
            )
        )
        for label, key, target in [
            ("fast Python, cold", "cold", " (target ≥ 0.5×)"),
            ("fast Python, warm", "warm", " (target ≥ 0.5×)"),
            ("compiled: tiktoken", "compiled tiktoken", ""),
            ("compiled: HF tokenizers", "compiled hf", ""),
        ]:
            seconds = statistics.median(times[key])
            rows.append(
                (
                    f"encode {mb:.1f} MB, {label}: MB/s",
                    f"{mb / seconds:.1f}",
                    f"{ref_mb:.1f} (tiktoken)",
                    f"{ref / seconds:.2f}×{target}",
                )
            )

    print("| measure | ours | reference | ratio |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

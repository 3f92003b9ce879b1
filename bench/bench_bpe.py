"""Byte-level BPE: training time and memory against HF `tokenizers`, encoding speed against tiktoken.

    python bench/bench_bpe.py [--vocab-size 8192] [--repeats 3] [--text FILE]

1. Training on ~3 MB of English Wikipedia (the sample gensim ships, XML and wiki markup stripped
   crudely) at ``--vocab-size``: ours (``BPETokenizer.train``) against HF's ``BpeTrainer`` with a
   ByteLevel pre-tokenizer. Each run is a fresh subprocess that reports its training wall time
   and peak resident memory (VmHWM, plus the largest worker process for ours: an upper bound,
   since forked workers share pages with their parent). "over base" subtracts the memory the
   process held after its imports, which shows the algorithm's own cost; "package init skipped"
   imports ``llm_lab.tokenizers.bpe`` without running ``llm_lab/tokenizers/__init__.py``, which
   at present imports torch (about 200 MiB) through ``simple.py``.
2. CS336 ``corpus.en`` at vocab 500 (if the shared fixtures are present): target < 0.4 s.
3. Encoding the same text with the trained vocabulary: ours against ``tiktoken.Encoding`` built
   from the same ranks (single thread). "cold" is a fresh tokenizer (every distinct pre-token is
   merged once), "warm" a second pass (pre-tokens come from the cache).

Runs alternate between the two implementations so that load on a shared machine hits both; the
table shows medians and ratios measured in the same run.
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
def vm_hwm_kib(field="VmHWM"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
if kind == "hf":
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
else:
    from pathlib import Path
    if kind == "ours-lean":  # skip llm_lab/tokenizers/__init__.py and what it imports (torch)
        import types
        package = types.ModuleType("llm_lab.tokenizers")
        package.__path__ = [str(Path("llm_lab/tokenizers").resolve())]
        sys.modules["llm_lab.tokenizers"] = package
    from llm_lab.tokenizers.bpe import BPETokenizer
base = vm_hwm_kib("VmRSS")
start = time.perf_counter()
if kind == "hf":
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([text_path], trainer)
else:
    tok = BPETokenizer.train(Path(text_path), vocab_size, special_tokens=["<|endoftext|>"])
seconds = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
tok.save(f"{out}/{kind}.json")
print(json.dumps({"seconds": seconds, "peak_kib": vm_hwm_kib() + children, "base_kib": base}))
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

    from llm_lab.tokenizers.bpe import BPETokenizer

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        text_path = args.text or out / "wiki.txt"
        if args.text is None:
            text_path.write_text(wikipedia_text(), encoding="utf-8")
        text = text_path.read_text(encoding="utf-8")
        mb = len(text.encode("utf-8")) / 1e6

        runs: dict[str, list[dict]] = {"hf": [], "ours": [], "ours-lean": []}
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
        for label, kind, key in [
            ("peak RSS (MiB)", "ours", None),
            ("peak RSS, package init skipped (MiB)", "ours-lean", None),
            ("peak RSS over base (MiB)", "ours", "base_kib"),
        ]:
            ours, hf = ((m["peak_kib"] - (m[key] if key else 0)) / 1024 for m in (med[kind], med["hf"]))
            rows.append(
                (f"train: {label}", f"{ours:.0f}", f"{hf:.0f} (HF)", f"{ours / hf:.2f}× (target ≤ 2×)")
            )

        if (FIXTURES / "corpus.en").is_file():
            seconds = seconds_of(
                lambda: BPETokenizer.train(FIXTURES / "corpus.en", 500, special_tokens=[EOT]), 5
            )
            rows.append(
                (
                    "train CS336 corpus.en, vocab 500 (s)",
                    f"{seconds:.3f}",
                    "0.4 (target)",
                    f"{seconds / 0.4:.2f}× of budget",
                )
            )

        reference = BPETokenizer.load(out / "ours.json").to_tiktoken()
        times: dict[str, list[float]] = {"cold": [], "warm": [], "tiktoken": []}
        for _ in range(max(args.repeats, 5)):  # one round = a fresh tokenizer twice, then tiktoken
            tok = BPETokenizer.load(out / "ours.json")
            times["cold"].append(seconds_of(lambda t=tok: t.encode(text), 1))
            times["warm"].append(seconds_of(lambda t=tok: t.encode(text), 1))
            times["tiktoken"].append(seconds_of(lambda: reference.encode_ordinary(text), 1))
        cold, warm, ref = (statistics.median(times[k]) for k in ("cold", "warm", "tiktoken"))
        assert tok.encode(text) == reference.encode_ordinary(text), "ids differ from tiktoken"
        for label, seconds in [("cold", cold), ("warm", warm)]:
            rows.append(
                (
                    f"encode {mb:.1f} MB ({label}): MB/s",
                    f"{mb / seconds:.1f}",
                    f"{mb / ref:.1f} (tiktoken)",
                    f"{ref / seconds:.2f}× (target ≥ 0.5×)",
                )
            )

    print("| measure | ours | reference | ratio |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

"""Preparing a corpus (``llm_lab/data/prepare.py``): throughput against tiktoken, and peak memory.

    python bench/bench_prepare.py [--mb 200] [--small-mb 100] [--one-mb 60] [--vocab-size 16384] [--repeats 3]

Corpus: the Python files under this interpreter's ``lib/`` (the standard library and every
installed package, ~340 MB of code, comments and docstrings), one document per file, read lazily
in sorted order until ``--mb`` MB. No text is repeated, so no cache flatters a number.
Tokenizer: the lab's byte-level BPE trained on the first 4 MB of that corpus at ``--vocab-size``.

Each measurement runs in a fresh process, and the kinds alternate so that load on a shared
machine hits them alike:
1. tiktoken's ``encode_ordinary_batch(num_threads=1)`` with the lab's ranks on the same documents
   (read into memory first; only the encoding is timed): the reference.
2. ``prepare(num_proc=1)`` and ``prepare(num_proc=2)`` (encoder "auto", i.e. tiktoken) from a
   stream of the documents, the whole call timed: reading, encoding, shards, index.
3. The same two on one document of ``--one-mb`` MB (the files joined, no ``<|endoftext|>``: text8
   or a dump in one file), which ``prepare`` cuts at pre-token boundaries so that both processes
   have work; tiktoken encodes it whole, on one thread.
4. Peak memory while preparing: the parent's VmHWM ("over base": less what it held after its
   imports — ``llm_lab.data.windows`` brings torch) and the largest worker's (``ru_maxrss`` of
   the children, pages shared with the parent included), at ``--small-mb`` and ``--mb``;
   "bound" adds one such worker per process.
MB/s is wall clock; "MB/CPU-s" divides by the CPU seconds of every process (user + system), which
stays honest on a shared machine when the wall clock does not. Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Executed in a fresh interpreter: argv = [kind, tokenizer.json, MB, cache dir].
WORKER = r"""
import json, resource, sys, time
from pathlib import Path
kind, tokenizer_path, mb, cache_dir = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
sys.path.insert(0, ".")
from bench_prepare import corpus
from llm_lab.data.prepare import prepare
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from llm_lab.tokenizers.compiled import tiktoken_encoding

def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

def cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

tok = FastBPETokenizer.load(tokenizer_path)
base = status_kib("VmRSS")
n_bytes = sum(len(d.encode()) for d in corpus(mb))
one = kind.endswith("-one")  # the corpus as one document
documents = (lambda: ["".join(corpus(mb))]) if one else (lambda: corpus(mb))
if kind.startswith("tiktoken"):
    encoding = tiktoken_encoding(tok)
    docs = list(documents())
    cpu, start = cpu_seconds(), time.perf_counter()
    encoding.encode_ordinary_batch(docs, num_threads=1)
else:
    docs = documents()
    cpu, start = cpu_seconds(), time.perf_counter()
    prepared = prepare(docs, [], tok, fingerprint=f"bench {mb} {one}", cache_dir=cache_dir,
                       num_proc=int(kind.removesuffix("-one")[-1]), progress=False, total_bytes=n_bytes)
    assert prepared.index["encoder"] == "tiktoken"
seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"mb": n_bytes / 1e6, "seconds": seconds, "cpu": cpu, "parent_kib": status_kib("VmHWM"),
                  "base_kib": base, "child_kib": child}))
"""


@cache
def python_files() -> list[Path]:
    lib = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return sorted(lib.rglob("*.py"))


def corpus(mb: float) -> Iterator[str]:
    """The UTF-8 Python files under lib/, in sorted order, until ``mb`` MB: a stream of documents.

    The file list is made once per process (first call, outside any timing)."""
    total = 0
    for path in python_files():
        try:
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            yield text
            total += len(text) if text.isascii() else len(text.encode("utf-8"))
            if total >= mb * 1e6:
                return


def run(kind: str, tokenizer: Path, mb: float, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", WORKER, kind, str(tokenizer), str(mb), str(cache)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        env=env,
        check=False,
    )
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--small-mb", type=float, default=100)
    parser.add_argument("--one-mb", type=float, default=60)
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        tok = FastBPETokenizer.train(args.vocab_size, documents=corpus(4), special_tokens=["<|endoftext|>"])
        tokenizer = tok.save(out / "tokenizer.json")
        runs: dict[str, list[dict]] = {"tiktoken": [], "prepare1": [], "prepare2": []}
        runs |= {"tiktoken-one": [], "prepare2-one": []}
        for repeat in range(args.repeats):
            for kind in runs:
                mb = args.one_mb if kind.endswith("-one") else args.mb
                runs[kind].append(run(kind, tokenizer, mb, out / f"cache-{kind}-{repeat}"))
        small = run("prepare2", tokenizer, args.small_mb, out / "cache-small")

    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[kind])

    mb = runs["tiktoken"][0]["mb"]
    ref_wall, ref_cpu = mb / med("tiktoken", "seconds"), mb / med("tiktoken", "cpu")
    print(
        f"corpus: {mb:.0f} MB of Python files, {len(python_files())} files available; vocab {args.vocab_size}"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| run | MB/s | × tiktoken 1 thread | MB/CPU-s | × tiktoken | target |\n|---|---|---|---|---|---|")
    print(f"| tiktoken encode_ordinary_batch, 1 thread | {ref_wall:.1f} | 1.00 | {ref_cpu:.1f} | 1.00 | |")
    for kind, n, target in [("prepare1", 1, "≥ 0.9×"), ("prepare2", 2, "≥ 1.7× (0.9× per process)")]:
        wall, cpu = mb / med(kind, "seconds"), mb / med(kind, "cpu")
        print(
            f"| prepare, num_proc={n} | {wall:.1f} ({wall / n:.1f} per process) | {wall / ref_wall:.2f} "
            f"| {cpu:.1f} | {cpu / ref_cpu:.2f} | {target} |"
        )
    one_mb = runs["tiktoken-one"][0]["mb"]
    one_ref, one_ref_cpu = one_mb / med("tiktoken-one", "seconds"), one_mb / med("tiktoken-one", "cpu")
    one_wall, one_cpu = one_mb / med("prepare2-one", "seconds"), one_mb / med("prepare2-one", "cpu")
    print(
        f"| one document of {one_mb:.0f} MB: tiktoken, 1 thread | {one_ref:.1f} | 1.00 "
        f"| {one_ref_cpu:.1f} | 1.00 | |"
    )
    print(
        f"| one document of {one_mb:.0f} MB: prepare, num_proc=2 | {one_wall:.1f} | "
        f"**{one_wall / one_ref:.2f}** | {one_cpu:.1f} | {one_cpu / one_ref_cpu:.2f} | ≥ 1.7× |"
    )
    print("\n| peak memory, num_proc=2 | parent MiB | parent over base | largest worker MiB | bound MiB |")
    print("|---|---|---|---|---|")
    for label, r in [(f"{small['mb']:.0f} MB", small), (f"{mb:.0f} MB", runs["prepare2"][-1])]:
        parent, child, base = r["parent_kib"] / 1024, r["child_kib"] / 1024, r["base_kib"] / 1024
        bound = parent + 2 * child
        row = f"| {label} | {parent:.0f} | {parent - base:.0f} | {child:.0f} | {bound:.0f}"
        print(row + " (target < 1024, flat) |")


if __name__ == "__main__":
    main()

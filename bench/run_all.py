"""Run every benchmark of the lab and write one markdown report: bench/RESULTS.md.

    python bench/run_all.py [--only cbow bpe ...] [--out bench/RESULTS.md]

Each benchmark is a script of its own (``bench/bench_*.py``) that measures ours against its
reference in the same run and prints markdown; this runner calls each in a fresh process, keeps
what it printed (its standard output), and records the machine, the date and the wall time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "cbow": ["bench_cbow.py"],
    "bpe": ["bench_bpe.py"],
    "prepare": ["bench_prepare.py"],
    "first_step": ["bench_first_step.py"],
    "attention": ["bench_attention.py"],
    "fused": ["bench_fused.py"],
    "kv_cache": ["bench_kv_cache.py"],
    "lightning_loop": ["bench_lightning_loop.py"],
    "eval": ["bench_eval.py"],
}


def machine() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}, load average {load:.1f} at start"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per benchmark")
    args = ap.parse_args()

    parts = [
        "# Benchmark results",
        f"Written by `python bench/run_all.py` on {datetime.date.today()} — {machine()}.",
        "Every ratio compares ours with the reference measured in the same run.",
    ]
    for name in args.only:
        script, *extra = BENCHMARKS[name]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / script), *extra],
            capture_output=True,
            text=True,
            timeout=args.timeout,
            cwd=HERE.parent,
        )
        seconds = time.perf_counter() - start
        body = proc.stdout.strip()
        if proc.returncode != 0:  # a benchmark exits 1 when it misses its target, or crashed
            body += f"\n\nexit status {proc.returncode}:\n```\n{proc.stderr.strip()[-1500:]}\n```"
        parts.append(f"## {name} (`bench/{script}`, {seconds:.0f} s)\n\n{body}")
        print(f"{name}: exit status {proc.returncode} in {seconds:.0f} s", flush=True)
    args.out.write_text("\n\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

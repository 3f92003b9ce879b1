"""One prepared check of the lab's GPU path: at most 8 minutes on one H100/H200, one summary table.

On the offline GPU machine, from the project root, with the wheels that
``../shared/gpu/prepare-wheels.sh`` put into ``./.whl`` (see /work/shared/gpu/README.md)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 \\
        && python3 bench/gpu_check.py --out "$OUT"

    python bench/gpu_check.py --smoke      # the same steps, tiny and on the CPU: does the script run?

The steps, most important first, each within its own time limit and all within ``--budget`` seconds
(a step left without time is skipped, and the table says so):

1. ``train.py`` as the user runs it: gpt2-124M compiled, bf16, batch 16x1024, vocab 8192, 200
   steps, fused AdamW. The logged ``train/tokens_per_sec`` and ``train/mfu`` over steps 110-190 (no
   validation or text samples between), the wall-clock tokens/s of the same steps (``train.log``
   times, independent of the throughput callback), the loss at step 200.
2. ``bench/bench_lightning_loop.py`` on the GPU: a raw PyTorch loop and the Lightning loop with the
   same module (compiled, bf16) and batch as 1. The Lightning loop's share of the raw loop's
   tokens/s, and train.py's (targets ≥ 0.95).
3. ``trainer=fsdp`` on one GPU: 20 steps clipped at 1.0, resumed to 40; the exported
   ``model.safetensors`` holds the gathered weights of the last checkpoint.
4. ``generate.py`` on the checkpoints of 1 and 3.
5. ``bench/gpu_gpt_vs_reference.py``: the lab's GPT against a minimal fused GPT-2, eager and
   compiled; its own table goes below the summary.

Writes ``gpu_check.md`` (the table) and ``gpu_check.log`` (every command and its output) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Sizes:
    """What the check trains: the real thing on a GPU, a toy on the CPU (``--smoke``)."""

    model: list[str]  # train.py overrides naming the model, data and device
    tokens: int  # per training step: data.batch_size x data.context_length
    steps: int  # training steps of step 1
    window: tuple[int, int]  # the steps whose throughput is compared (no validation between)
    loop: list[str]  # arguments of bench/bench_lightning_loop.py
    reference: list[str]  # arguments of bench/gpu_gpt_vs_reference.py
    fsdp: list[str]  # train.py overrides of the FSDP run
    device: str


GPU = Sizes(
    model=[
        "trainer=gpu",
        "model.net.size=gpt2",
        "model.net.compile=true",
        "data.context_length=1024",
        "data.batch_size=16",
        "tokenizer.vocab_size=8192",
        "+optimizer.fused=true",  # as the raw loop: one AdamW kernel per step
    ],
    tokens=16 * 1024,
    steps=200,
    window=(110, 190),
    loop=["--device", "cuda", "--size", "gpt2", "--seq-len", "1024", "--vocab", "8192", "--compile"]
    + ["--steps", "40", "--warmup", "10", "--rounds", "1", "--min-ratio", "0.95"],
    reference=["--no-compile", "--rounds", "2"],
    fsdp=[
        "trainer=fsdp",
        "trainer.devices=1",
        "model.net.size=gpt2",
        "data.context_length=1024",
        "data.batch_size=16",
        "tokenizer.vocab_size=8192",
    ],
    device="cuda",
)
SMOKE = Sizes(
    model=[
        "trainer=cpu",
        "model.net.size=lab-tiny",
        "data.context_length=32",
        "data.stride=32",  # gpt.yaml's stride of 64 is refused for 32-token windows
        "data.batch_size=16",
        "corpus.max_documents=8",
        "tokenizer.vocab_size=300",
    ],
    tokens=16 * 32,
    steps=40,
    window=(10, 30),
    loop=["--size", "lab-tiny", "--seq-len", "32", "--vocab", "300", "--batch", "16"]
    + ["--steps", "30", "--warmup", "10", "--rounds", "1", "--min-ratio", "0"],
    reference=["--smoke"],
    fsdp=[
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.precision=32-true",
        "model.net.size=lab-tiny",
        "data.context_length=32",
        "data.stride=32",  # gpt.yaml's stride of 64 is refused for 32-token windows
        "corpus.max_documents=8",
        "tokenizer.vocab_size=300",
    ],
    device="cpu",
)


@dataclass
class Check:
    """Runs commands from the project root within a total budget, logs them, collects table rows."""

    log: IO[str]
    deadline: float
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def run(self, cmd: list[str], limit: float) -> tuple[int | None, str]:
        """``cmd``'s exit code (None: out of time) and output, within ``limit`` seconds and the budget."""
        limit = min(limit, self.deadline - time.monotonic())
        start = time.monotonic()
        env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit, env=env)
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as stopped:
            code = None
            output = "".join(
                part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                for part in (stopped.stdout, stopped.stderr)
            )
        self.log.write(f"$ {shlex.join(cmd)}\n# {time.monotonic() - start:.0f} s, exit {code}\n{output}\n")
        self.log.flush()
        return code, output

    def step(self, name: str, limit: float, body: Callable[[], str]) -> None:
        """Run one step (``body`` returns its result, or raises with what went wrong)."""
        left = self.deadline - time.monotonic()
        if left < min(limit, 30.0):
            self.rows.append((name, "", f"skipped: {left:.0f} s of the budget left"))
            return
        start = time.monotonic()
        try:
            result, status = body(), "ok"
        except Exception as err:  # noqa: BLE001 - every failure becomes a row of the table
            result, status = "", f"FAILED: {err}"
        self.rows.append((name, result, f"{status} ({time.monotonic() - start:.0f} s)"))
        print(f"{name}: {result or status}", flush=True)


def expect(code: int | None, output: str, what: str) -> None:
    if code != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])[-300:]
        raise RuntimeError(f"{what} {'ran out of time' if code is None else f'exited {code}'}: {tail}")


def metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """The CSV logger's values by training step (1-based, as the progress lines count)."""
    by_step: dict[int, dict[str, float]] = {}
    with (run_dir / "csv" / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if v and k not in ("step", "epoch")}
            by_step.setdefault(int(row["step"]) + 1, {}).update(values)
    return by_step


def progress_times(run_dir: Path) -> dict[int, float]:
    """When each progress line of ``train.log`` was written (seconds, millisecond resolution)."""
    times = {}
    for line in (run_dir / "train.log").read_text().splitlines():
        found = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*\] step (\d+)/", line)
        if found:
            when = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times[int(found.group(2))] = when.timestamp()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check", help="table and log")
    parser.add_argument("--work", type=Path, default=Path("/tmp/llm_lab_gpu_check"), help="run folders")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all the steps")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: does it run?")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else GPU
    if sizes.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU machine, or use --smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    gpt2, fsdp = args.work / "gpt2", args.work / "fsdp"
    started = time.monotonic()
    with (args.out / "gpu_check.log").open("w") as log:
        check = Check(log, started + args.budget)
        found: dict[str, float] = {}
        sections: list[str] = []  # tables a step adds below the summary

        def train_py() -> str:
            a, b = sizes.window
            every = 10  # trainer.log_every_n_steps of experiment=gpt
            code, output = check.run(
                [PY, "train.py", "experiment=gpt", *sizes.model, f"trainer.max_steps={sizes.steps}"]
                + ["logger=csv", f"progress_every_n_steps={every}", f"hydra.run.dir={gpt2}"]
                + [f"callbacks.throughput.window_size={(b - a) // every + 1}"],
                limit=240,
            )
            expect(code, output, "train.py")
            logged, times = metrics(gpt2), progress_times(gpt2)
            wall = (b - a) * sizes.tokens / (times[b] - times[a])
            found["train"] = logged[b]["train/tokens_per_sec"]
            peak = re.search(r"train/mfu[^\n]*", output)
            mfu = logged[b].get("train/mfu")
            return (
                f"logged {found['train']:,.0f} tokens/s, wall clock {wall:,.0f} "
                f"({found['train'] / wall:.3f}x, target 1 ± 0.05); MFU "
                + (f"{100 * mfu:.1f}%" if mfu is not None else "not logged")
                + f" [{peak[0] if peak else 'no peak line'}]; loss at step {sizes.steps}: "
                f"{logged[sizes.steps]['train/loss']:.3f}"
            )

        def loops() -> str:
            code, output = check.run([PY, "-m", "bench.bench_lightning_loop", *sizes.loop], limit=240)
            if code not in (0, 1):  # 1: below the target ratio, which the table shows
                expect(code, output, "bench/bench_lightning_loop.py")
            rates = dict(re.findall(r"^(raw PyTorch loop|Lightning loop): +(\d+) tokens/s", output, re.M))
            raw, lightning = float(rates["raw PyTorch loop"]), float(rates["Lightning loop"])
            shares = f"Lightning loop / raw: {lightning / raw:.3f}"
            if "train" in found:
                shares += f", train.py / raw: {found['train'] / raw:.3f}"
            return f"raw loop {raw:,.0f} tokens/s, Lightning loop {lightning:,.0f}; {shares} (targets ≥ 0.95)"

        def fsdp_run() -> str:
            common = [PY, "train.py", "experiment=gpt", *sizes.fsdp, "logger=csv", f"hydra.run.dir={fsdp}"]
            common += ["trainer.log_every_n_steps=5", "callbacks.text_samples.max_new_tokens=8"]
            code, output = check.run([*common, "trainer.max_steps=20"], limit=150)
            expect(code, output, "the first 20 steps")
            code, output = check.run([*common, "trainer.max_steps=40", f"ckpt_path={fsdp}"], limit=150)
            expect(code, output, "the resumed run")
            from safetensors.torch import load_file

            ckpt = torch.load(fsdp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            exported = load_file(str(fsdp / "model.safetensors"))
            same = all(torch.equal(t, ckpt["state_dict"][f"net.{k}"]) for k, t in exported.items())
            if ckpt["global_step"] != 40 or not same or len(exported) != len(ckpt["state_dict"]):
                raise RuntimeError(f"step {ckpt['global_step']}, export equal to the checkpoint: {same}")
            logged = metrics(fsdp)  # of the resumed run
            losses = {step: v["train/loss"] for step, v in logged.items() if "train/loss" in v}
            norms = [v["train/grad_norm"] for v in logged.values() if "train/grad_norm" in v]
            first = min(losses)
            return (
                f"resumed 20 -> 40; loss at {first} {losses[first]:.3f}, at 40 {losses[40]:.3f}; "
                f"grad norm before clipping (1.0) {norms[0]:.2f} -> {norms[-1]:.2f}; "
                f"model.safetensors = last.ckpt ({len(exported)} tensors)"
            )

        def generate() -> str:
            texts = []
            for run_dir in (gpt2, fsdp):
                code, output = check.run(
                    [PY, "generate.py", f"ckpt_path={run_dir}", "prompt=The function", "max_new_tokens=24"]
                    + [f"device={sizes.device}"],
                    limit=90,
                )
                expect(code, output, f"generate.py on {run_dir.name}")
                texts.append(f"{run_dir.name}: {' '.join(output.split())[-80:]!r}")
            return "; ".join(texts)

        def reference() -> str:
            code, output = check.run([PY, "-m", "bench.gpu_gpt_vs_reference", *sizes.reference], limit=150)
            expect(code, output, "bench/gpu_gpt_vs_reference.py")
            # Its own table goes below the summary table; the cell gets the two ratios.
            rows = [line for line in output.splitlines() if line.startswith("|")]
            sections.append("\n".join(["## 5 lab GPT vs minimal GPT-2", "", *rows]))
            ratios = re.findall(r"^\| (eager|compiled) \| lab \|.*\*\*([\d.]+)\*\*", output, re.M)
            shown = ", ".join(f"{mode} {ratio}" for mode, ratio in ratios)
            return f"lab / reference tokens/s: {shown} (targets ≥ 0.9 eager, ≥ 1.0 compiled; table below)"

        check.step("1 train.py gpt2 compiled bf16", 240, train_py)
        check.step("2 raw loop vs Lightning, same batch", 240, loops)
        check.step("3 trainer=fsdp, 1 device", 300, fsdp_run)
        check.step("4 generate.py", 180, generate)
        check.step("5 lab GPT vs minimal GPT-2", 150, reference)

    device = torch.cuda.get_device_name() if sizes.device == "cuda" else "CPU (smoke)"
    import lightning

    table = [
        f"# llm_lab GPU check: {device}, torch {torch.__version__}, lightning {lightning.__version__}, "
        f"{time.monotonic() - started:.0f} s",
        "",
        "| step | result | status |",
        "|---|---|---|",
        *(f"| {name} | {result} | {status} |" for name, result, status in check.rows),
        *(f"\n{section}" for section in sections),
    ]
    (args.out / "gpu_check.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    sys.exit(1 if any(status.startswith("FAILED") for _, _, status in check.rows) else 0)


if __name__ == "__main__":
    main()

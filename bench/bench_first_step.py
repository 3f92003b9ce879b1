"""Time to the first training step of a second run, on a corpus prepared by the first.

    python bench/bench_first_step.py [--mb 200] [--vocab-size 4096]

Corpus: ``--mb`` MB of the Python files under this interpreter's ``lib/`` (bench_prepare.py's
corpus), written as ``.txt`` files of documents separated by ``<|endoftext|>``; a BPE tokenizer
trained on its first 4 MB is given by ``tokenizer.path`` (training a tokenizer is not what is
measured). Both runs are ``experiment=gpt`` composed as ``train.py`` composes it and driven by
train.py's own steps (corpus → tokenizer → DataModule, model, Trainer → fit) in this process,
stopped after their first optimizer step:

1. the first run prepares the ids (``llm_lab/data/prepare.py``, ``data.num_proc`` processes);
2. the second run finds them in the cache and memory-maps them: the target is < 5 s from the start
   of ``train()``'s work to the end of its first step.

The interpreter's imports (torch, Lightning, Hydra), paid by every run whatever its data, are
measured apart, in a fresh process.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
from bench_prepare import corpus

ROOT = Path(__file__).resolve().parents[1]


def write_corpus(folder: Path, mb: float) -> float:
    """``mb`` MB of documents as text files of about 50 MB each; returns the MB written."""
    folder.mkdir(parents=True, exist_ok=True)
    written, part, out = 0, 0, None
    for doc in corpus(mb):
        if out is None or out.tell() > 50e6:
            if out is not None:
                out.close()
            out = (folder / f"part{part:02d}.txt").open("w", encoding="utf-8")
            part += 1
        else:
            out.write("<|endoftext|>")
        out.write(doc)
        written += len(doc.encode("utf-8"))
    if out is not None:
        out.close()
    return written / 1e6


class FirstStep(L.Callback):
    """Remember when the first optimizer step ended, and stop the run there."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.at = time.perf_counter()
        trainer.should_stop = True


def seconds_to_first_step(train: Any, overrides: list[str]) -> float:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    Path(cfg.paths.output_dir).mkdir(parents=True)  # what Hydra does before a run starts
    start = time.perf_counter()
    corpus_ = train.read_corpus(cfg)
    run = train.build_run(cfg, corpus_, train.make_tokenizer(cfg, corpus_))
    first = FirstStep()
    run.trainer.callbacks.append(first)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert first.at is not None
    return first.at - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("lab_train", ROOT / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    sys.modules["lab_train"] = train
    spec.loader.exec_module(train)
    train.configure_console()
    from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mb = write_corpus(folder / "corpus", args.mb)
        tokenizer = FastBPETokenizer.train(
            args.vocab_size, documents=corpus(4), special_tokens=["<|endoftext|>"]
        )
        tokenizer.save(folder / "tokenizer.json")
        overrides = [
            "experiment=gpt",
            f"corpus.path={folder / 'corpus'}",
            f"tokenizer.path={folder / 'tokenizer.json'}",
            f"data.num_proc={args.num_proc}",
            f"paths.cache_dir={folder / 'cache'}",
            f"paths.root_dir={folder}",
            f"paths.output_dir={folder / 'run'}",
            "logger=none",
            "callbacks.text_samples=null",
        ]
        first = seconds_to_first_step(train, overrides)
        second = seconds_to_first_step(train, [*overrides, f"paths.output_dir={folder / 'run2'}"])
    imports = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import train"], cwd=ROOT, check=True)
    imports = time.perf_counter() - imports

    print(
        f"## Time to the first step ({mb:.0f} MB corpus, vocabulary {args.vocab_size}, "
        f"{args.num_proc} processes)\n"
    )
    print("| run | seconds to the end of step 1 | target |")
    print("|---|---:|---|")
    print(f"| first (prepares the ids) | {first:.1f} | |")
    print(f"| second (reuses them) | {second:.1f} | < 5 s: {'met' if second < 5 else 'NOT met'} |")
    print(f"| imports of a fresh interpreter (any run) | {imports:.1f} | |")


if __name__ == "__main__":
    main()

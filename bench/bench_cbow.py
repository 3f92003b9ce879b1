"""Our CBoW (Lightning, word2vec's SGD written out) against gensim's Word2Vec(sg=0), same corpus,
same tokens, same hyperparameters, measured in one run.

1. gensim's Wikipedia sample: words/s (raw corpus words x epochs / training wall time) and the
   WordSim-353 Spearman ρ of both at ``--epochs``, with the ratios (targets: words/s ≥ 0.5 x
   gensim's with 2 threads, ρ ≥ gensim's).
2. Time to quality: gensim's ρ after ``--long-epochs`` epochs and the seconds they take, against
   the training seconds our ``--long-epochs`` run needs before its ρ first reaches that value
   (measured after every epoch; the evaluations are not timed). Then the readable path (autograd +
   Adam on the same model and batches) at ``--epochs``, for comparison.
3. The built-in corpus (what ``python train.py experiment=cbow`` trains on): the mean cosine
   between two random words after the experiment's settings and each run of README's sweep,
   against gensim's after ``--long-epochs`` epochs on the same tokens.

    python bench/bench_cbow.py [--epochs 5] [--long-epochs 20] [--batch-size 1024] [--lr 0.05]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from common import gensim_test_data, markdown_table, wikipedia_text

from llm_lab.data.cbow import CBoWDataModule
from llm_lab.data.corpus import DOCUMENT_SEPARATOR, Corpus
from llm_lab.eval.word_vectors import word_similarity
from llm_lab.lit.cbow import CBoWModule
from llm_lab.lit.schedules import linear_decay
from llm_lab.lit.scratch import HandWrittenUpdate
from llm_lab.models.cbow import mean_pair_cosine
from llm_lab.tokenizers.simple import SimpleTokenizer

# README's sweep: python train.py -m experiment=cbow model.embed_dim=32,64 optimizer.lr=0.05,0.07
BUILTIN_EPOCHS = 15  # conf/experiment/cbow.yaml: trainer.max_epochs
README_SWEEP = [(dim, lr) for dim in (32, 64) for lr in (0.05, 0.07)]


def paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if len(p.split()) > 3]


class EpochClock(L.Callback):
    """Training seconds at the end of each epoch, with the WordSim ρ then (the evaluation is not
    counted in the seconds)."""

    def __init__(self, sim_file: Path) -> None:
        self.sim_file = sim_file
        self.points: list[tuple[float, float]] = []
        self.paused = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        now = time.perf_counter()
        rho = word_similarity(*pl_module.word_table(), self.sim_file).score
        self.points.append((now - self.start - self.paused, rho))
        self.paused += time.perf_counter() - now


def train_ours(
    dm: CBoWDataModule,
    epochs: int,
    dim: int,
    lr: float,
    negatives: int,
    callbacks: list[Any] | None = None,
    optimizer: Any = HandWrittenUpdate,
) -> tuple[float, CBoWModule]:
    """Train through the LightningModule that `train.py experiment=cbow` uses; the seconds of fit.
    ``optimizer``: word2vec's SGD (HandWrittenUpdate), or a torch optimizer for the autograd path."""
    module = CBoWModule(
        dm.vocab,
        embed_dim=dim,
        negatives=negatives,
        raw_words_per_example=dm.train_set.raw_words_per_example,
        optimizer=partial(optimizer, lr=lr),
        scheduler=linear_decay,
    )
    trainer = L.Trainer(
        default_root_dir=tempfile.mkdtemp(),  # where vectors.txt goes; not the working directory
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    return time.perf_counter() - start, module


def train_gensim(
    sentences: list[list[str]], epochs: int, args: argparse.Namespace, min_count: int
) -> tuple[float, Any]:
    from gensim.models import Word2Vec

    model = Word2Vec(
        vector_size=args.dim,
        window=args.window,
        negative=args.negatives,
        min_count=min_count,
        sample=args.sample,
        sg=0,
        workers=2,
        seed=1,
        epochs=epochs,
    )
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    return time.perf_counter() - start, model.wv


def data(corpus: Corpus, args: argparse.Namespace, min_count: int) -> tuple[CBoWDataModule, list[list[str]]]:
    """The DataModule of `train.py experiment=cbow` over ``corpus``, and the same tokens as sentences
    for gensim (lower-cased words, no punctuation: the `words` tokenizer)."""
    docs = corpus.load().train
    tokenizer = SimpleTokenizer.from_corpus(docs, lowercase=True, punctuation=False)
    dm = CBoWDataModule(
        corpus,
        tokenizer,
        window=args.window,
        min_count=min_count,
        subsample=args.sample,
        batch_size=args.batch_size,
    )
    dm.build()
    return dm, [dm.tokenize(d) for d in docs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--long-epochs", type=int, default=20)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--sample", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=0.05, help="word2vec's SGD step (optimizer=word2vec)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as experiment=cbow: one core trains, the other builds batches
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)

    # --- 1 and 2: gensim's Wikipedia sample, as one file of documents split as train.py splits it
    corpus_file = Path(tempfile.mkdtemp()) / "wikipedia.txt"
    corpus_file.write_text(DOCUMENT_SEPARATOR.join(paragraphs(wikipedia_text())), encoding="utf-8")
    dm, sentences = data(Corpus(path=str(corpus_file), val_fraction=0.01, seed=0), args, args.min_count)
    raw_words = sum(len(s) for s in sentences)  # gensim's count: every token, before min_count
    sim_file = gensim_test_data("wordsim353.tsv")
    print(f"corpus: gensim's Wikipedia sample, {len(sentences)} training paragraphs, {raw_words:,} words")

    ours_s, module = train_ours(dm, args.epochs, args.dim, args.lr, args.negatives)
    ours_rho = word_similarity(*module.word_table(), sim_file)
    gensim_s, kv = train_gensim(sentences, args.epochs, args, args.min_count)
    gensim_rho = word_similarity(kv.index_to_key, kv.vectors, sim_file)
    long_gensim_s, long_kv = train_gensim(sentences, args.long_epochs, args, args.min_count)
    long_gensim_rho = word_similarity(long_kv.index_to_key, long_kv.vectors, sim_file).score
    clock = EpochClock(sim_file)
    train_ours(dm, args.long_epochs, args.dim, args.lr, args.negatives, [clock])
    reached = next(((s, e + 1) for e, (s, rho) in enumerate(clock.points) if rho >= long_gensim_rho), None)

    total = raw_words * args.epochs
    ours_wps, gensim_wps = total / ours_s, total / gensim_s
    e = args.epochs
    print(
        markdown_table(
            [
                "",
                "ours (Lightning CBoW, word2vec's SGD, 1 thread + batch thread)",
                "gensim Word2Vec(sg=0), 2 threads",
                "ours / gensim",
            ],
            [
                ["vocabulary", len(module.vocab), len(kv.index_to_key), ""],
                [
                    f"train seconds, {e} epochs",
                    f"{ours_s:.1f}",
                    f"{gensim_s:.1f}",
                    f"{ours_s / gensim_s:.2f}",
                ],
                [
                    "words/s",
                    f"{ours_wps:,.0f}",
                    f"{gensim_wps:,.0f}",
                    f"**{ours_wps / gensim_wps:.2f}** (target ≥ 0.5)",
                ],
                [
                    f"WordSim-353 Spearman, {e} epochs",
                    f"{ours_rho.score:.3f} ({ours_rho.n_skipped} OOV)",
                    f"{gensim_rho.score:.3f} ({gensim_rho.n_skipped} OOV)",
                    f"**{ours_rho.score / gensim_rho.score:.2f}** (target ≥ 1)",
                ],
                [
                    f"seconds to gensim's {args.long_epochs}-epoch ρ = {long_gensim_rho:.3f}",
                    "not reached"
                    if reached is None
                    else f"{reached[0]:.1f} (epoch {reached[1]} of {args.long_epochs})",
                    f"{long_gensim_s:.1f} ({args.long_epochs} epochs)",
                    "" if reached is None else f"**{reached[0] / long_gensim_s:.2f}** (target ≤ 1)",
                ],
            ],
        )
    )
    print("ours, ρ after each epoch of the long run: " + ", ".join(f"{rho:.3f}" for _, rho in clock.points))
    adam_s, adam = train_ours(dm, args.epochs, args.dim, 1e-2, args.negatives, optimizer=torch.optim.Adam)
    adam_rho = word_similarity(*adam.word_table(), sim_file).score
    print(
        f"the readable path, autograd + Adam (lr 1e-2, dense gradients, same batches), {e} epochs: "
        f"{total / adam_s:,.0f} words/s ({total / adam_s / gensim_wps:.2f}× gensim's), ρ {adam_rho:.3f}"
    )

    # --- 3: the built-in corpus, the experiment's settings (conf/experiment/cbow.yaml) and README's sweep
    builtin, builtin_sentences = data(Corpus(seed=42), args, min_count=3)
    _, builtin_kv = train_gensim(builtin_sentences, args.long_epochs, args, min_count=3)
    gensim_cos = mean_pair_cosine(builtin_kv.vectors)
    rows = [[f"gensim, {args.long_epochs} epochs", f"{gensim_cos:.3f}", ""]]
    for dim, lr in [(args.dim, args.lr), *README_SWEEP]:
        _, run = train_ours(builtin, BUILTIN_EPOCHS, dim, lr, args.negatives)
        cos = mean_pair_cosine(run.word_table()[1])
        rows.append(
            [
                f"ours, {BUILTIN_EPOCHS} epochs, embed_dim={dim} lr={lr}",
                f"{cos:.3f}",
                f"{'≤' if cos <= gensim_cos else '>'} gensim's",
            ]
        )
    print(f"\nbuilt-in corpus ({len(builtin.vocab)} words): the mean cosine between two random words")
    print(markdown_table(["run", "mean random-pair cosine", "target ≤ gensim's"], rows))
    print(f"settings: {vars(args)}; load average {np.round(os.getloadavg(), 1).tolist()} on 2 CPUs")


if __name__ == "__main__":
    main()

"""Our CBoW (Lightning, PyTorch) against gensim's Word2Vec(sg=0), same corpus and hyperparameters.

Prints words/s (raw corpus words x epochs / training wall time) and the WordSim-353 Spearman ρ of
both, with the ratios. Targets on a 2-core CPU: our ρ ≥ gensim's, our words/s ≥ 0.5 x gensim's.

    python bench/bench_cbow.py [--epochs 5] [--batch-size 1024] [--optimizer sgd]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from common import gensim_test_data, markdown_table, wikipedia_text

from llm_lab.data.cbow import CBoWDataModule
from llm_lab.data.corpus import DOCUMENT_SEPARATOR, Corpus
from llm_lab.eval.word_vectors import word_similarity
from llm_lab.lit.cbow import CBoWModule
from llm_lab.lit.schedules import linear_decay
from llm_lab.tokenizers.simple import SimpleTokenizer, split_words


def paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if len(p.split()) > 3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--sample", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.025 x batch (sgd), 2e-2 (adam)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)

    # The paragraphs as one file of documents, split as train.py splits a corpus; both sides train
    # on the same training paragraphs (validation is not timed).
    corpus_dir = tempfile.mkdtemp()
    corpus_file = Path(corpus_dir) / "wikipedia.txt"
    corpus_file.write_text(DOCUMENT_SEPARATOR.join(paragraphs(wikipedia_text())), encoding="utf-8")
    corpus = Corpus(path=str(corpus_file), val_fraction=0.01, seed=0)
    docs = corpus.load().train
    sim_file = gensim_test_data("wordsim353.tsv")
    raw_words = sum(len(split_words(d, lowercase=True, keep_punctuation=False)) for d in docs)
    print(f"corpus: gensim's Wikipedia sample, {len(docs)} training paragraphs, {raw_words:,} words")

    # --- ours: the tokenizer, DataModule and LightningModule that `train.py experiment=cbow` uses
    tokenizer = SimpleTokenizer.from_corpus(docs, lowercase=True, punctuation=False)
    dm = CBoWDataModule(
        corpus,
        tokenizer,
        window=args.window,
        min_count=args.min_count,
        subsample=args.sample,
        batch_size=args.batch_size,
    )
    dm.build()
    lr = args.lr or (0.025 * args.batch_size if args.optimizer == "sgd" else 2e-2)

    def optimizer(params):  # type: ignore[no-untyped-def]
        if args.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr)
        return torch.optim.Adam(params, lr=lr)

    module = CBoWModule(
        dm.vocab,
        embed_dim=args.dim,
        negatives=args.negatives,
        raw_words_per_example=dm.train_set.raw_words_per_example,
        optimizer=optimizer,
        scheduler=linear_decay,
    )
    trainer = L.Trainer(
        default_root_dir=tempfile.mkdtemp(),  # where vectors.txt goes; not the working directory
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    ours_seconds = time.perf_counter() - start
    words, vectors = module.word_table()
    ours_rho = word_similarity(words, vectors, sim_file)

    # --- gensim, same tokens, same hyperparameters, all cores
    from gensim.models import Word2Vec

    sentences = [split_words(d, lowercase=True, keep_punctuation=False) for d in docs]
    model = Word2Vec(
        vector_size=args.dim,
        window=args.window,
        negative=args.negatives,
        min_count=args.min_count,
        sample=args.sample,
        sg=0,
        workers=args.threads,
        seed=1,
        epochs=args.epochs,
    )
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=args.epochs)
    gensim_seconds = time.perf_counter() - start
    kv = model.wv
    gensim_rho = word_similarity(kv.index_to_key, kv.vectors, sim_file)

    total = raw_words * args.epochs
    ours_wps, gensim_wps = total / ours_seconds, total / gensim_seconds
    print(
        markdown_table(
            ["", "ours (Lightning CBoW)", "gensim Word2Vec(sg=0)", "ours / gensim"],
            [
                ["vocabulary", len(words), len(kv.index_to_key), ""],
                [
                    "train seconds",
                    f"{ours_seconds:.1f}",
                    f"{gensim_seconds:.1f}",
                    f"{ours_seconds / gensim_seconds:.2f}",
                ],
                [
                    "words/s",
                    f"{ours_wps:,.0f}",
                    f"{gensim_wps:,.0f}",
                    f"**{ours_wps / gensim_wps:.2f}** (target ≥ 0.5)",
                ],
                [
                    "WordSim-353 Spearman",
                    f"{ours_rho.score:.3f} ({ours_rho.n_skipped} OOV)",
                    f"{gensim_rho.score:.3f} ({gensim_rho.n_skipped} OOV)",
                    f"**{ours_rho.score / gensim_rho.score:.2f}** (target ≥ 1)",
                ],
            ],
        )
    )
    print(f"settings: {vars(args)}, lr={lr}")


if __name__ == "__main__":
    main()

"""Training a tokenizer as a stage of its own: ``python train.py experiment=bpe`` (or ``simple_tokenizer``).

A tokenizer is not learned by gradient descent, so this stage runs a plain loop instead of
Lightning — no optimizer, no batches. It still enters through ``train.py`` and writes the same run
directory as every stage: the config snapshot, the loggers' files (TensorBoard), ``tokenizer.json``
and ``metrics.json``.

- ``bpe`` (Raschka ch. 2.5; Sennrich et al. 2016): the pre-tokens of the training documents are
  counted once, then merges are made ``merges_per_step`` at a time. Each step logs
  ``train/vocab_size``, ``train/merge_frequency`` (how often the newest merged pair occurred: it
  falls, Zipf-like) and ``train/elapsed_sec``; every ``val_every_n_steps`` steps and at the end,
  ``val/bytes_per_token`` (UTF-8 bytes per token of the validation documents: compression grows).
- ``simple`` (Raschka ch. 2.2–2.4): one step builds the vocabulary; ``val/unk_rate`` is the share
  of validation tokens that are ``<|unk|>``, and a few encode → decode round trips go to TensorBoard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger

from llm_lab.console import number
from llm_lab.data.corpus import Split
from llm_lab.errors import ArgumentError, type_error
from llm_lab.loggers import markdown_table
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.bpe import check_special_tokens, check_vocab_size
from llm_lab.tokenizers.bpe_fast import BPETrainer, FastBPETokenizer
from llm_lab.tokenizers.formats import token_to_str
from llm_lab.tokenizers.pretokenize import count_corpus
from llm_lab.tokenizers.simple import UNK, SimpleTokenizer

log = logging.getLogger(__name__)
Report = Callable[[int, dict[str, float]], None]


def bytes_per_token(tokenizer: Tokenizer, docs: Sequence[str]) -> float:
    """UTF-8 bytes per token over ``docs``: how much a tokenizer compresses text."""
    n_tokens = sum(len(tokenizer.encode(d)) for d in docs)
    return sum(len(d.encode("utf-8")) for d in docs) / max(n_tokens, 1)


# The stage's own settings (``stage.*`` of conf/experiment/bpe.yaml) and the lowest value of each;
# max_steps also takes -1, "until the vocabulary is complete".
STAGE_MINIMUMS = {"merges_per_step": 1, "max_steps": 1, "val_every_n_steps": 1, "n_examples": 0}


def check_stage(stage: dict[str, Any]) -> None:
    """Refuse a stage setting that is not an integer or is out of range, naming it: ``max_steps=-5``
    would run to the end like -1, ``max_steps=0`` log no metric at all, and ``val_every_n_steps=0``
    divide by zero."""
    for key, value in stage.items():
        if key not in STAGE_MINIMUMS:
            continue
        wrong = type_error(key, value, "int")
        if wrong is not None:
            raise ArgumentError(key, wrong.problem, f"use an integer, at least {STAGE_MINIMUMS[key]}")
        if key == "max_steps" and value == -1:
            continue
        if value < STAGE_MINIMUMS[key]:
            fix = "use -1 (until the vocabulary is complete) or 1 or more" if key == "max_steps" else ""
            raise ArgumentError(
                key, f"{value} < {STAGE_MINIMUMS[key]}", fix or f"use {STAGE_MINIMUMS[key]} or more"
            )


# Above the merge table: tokens are bytes, written as GPT-2 writes them (llm_lab/tokenizers/formats.py).
BYTE_LEGEND = (
    "Tokens are byte strings, written as GPT-2 writes them: each byte that is not a printable "
    "character is shown as one that is. **Ġ** is a space, **Ċ** a newline, **ĉ** a tab; so "
    '`Ġthe` is " the", a word with the space before it.'
)


def train_bpe_in_steps(
    corpus: Split,
    report: Report,
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    merges_per_step: int = 10,
    max_steps: int = -1,
    val_every_n_steps: int = 10,
) -> tuple[FastBPETokenizer, list[str]]:
    """Byte-level BPE, ``merges_per_step`` merges per reported step; stops at ``vocab_size``, when no
    pair is left, or after ``max_steps`` steps (-1: no limit). Returns the tokenizer and a markdown
    table of its first merges."""
    check_stage(
        {"merges_per_step": merges_per_step, "max_steps": max_steps, "val_every_n_steps": val_every_n_steps}
    )
    specials = list(special_tokens)
    check_special_tokens(specials)
    check_vocab_size(vocab_size, specials)
    start = time.perf_counter()
    trainer = BPETrainer(count_corpus(documents=corpus.train, special_tokens=specials), specials)

    def current() -> FastBPETokenizer:
        return FastBPETokenizer(trainer.vocab, trainer.merges, specials)

    step = 0
    while len(trainer.vocab) < vocab_size and step != max_steps:
        todo = min(merges_per_step, vocab_size - len(trainer.vocab))
        done = trainer.merge(todo)
        step += 1
        metrics = {
            "train/vocab_size": float(len(trainer.vocab)),
            "train/elapsed_sec": time.perf_counter() - start,
        }
        if trainer.merge_counts:
            metrics["train/merge_frequency"] = float(trainer.merge_counts[-1])
        complete = done < todo or len(trainer.vocab) >= vocab_size or step == max_steps
        if complete or step % val_every_n_steps == 0:
            metrics["val/bytes_per_token"] = bytes_per_token(current(), corpus.val)
        report(step, metrics)
        if done < todo:  # every pre-token is a single token: nothing left to merge
            break
    rows = [
        (i + 1, f"{token_to_str(a)} + {token_to_str(b)} → {token_to_str(a + b)}", count)
        for i, ((a, b), count) in enumerate(zip(trainer.merges[:50], trainer.merge_counts, strict=False))
    ]
    return current(), [BYTE_LEGEND, "", markdown_table(("rank", "merge", "pair count"), rows)]


def build_simple(
    corpus: Split, report: Report, n_examples: int = 3, **settings: Any
) -> tuple[Tokenizer, list[str]]:
    """The regex word tokenizer's vocabulary in one step; returns it and encode → decode round trips."""
    tokenizer = SimpleTokenizer.from_corpus(corpus.train, **settings)
    ids = [i for doc in corpus.val for i in tokenizer.encode(doc)]
    unk = tokenizer.token_to_id(UNK)
    report(
        1,
        {
            "train/vocab_size": float(tokenizer.vocab_size),
            "val/unk_rate": sum(i == unk for i in ids) / max(len(ids), 1),
            "val/tokens": float(len(ids)),
            "val/bytes_per_token": bytes_per_token(tokenizer, corpus.val),
        },
    )
    rows = []
    for doc in corpus.val[:n_examples]:
        sentence = " ".join(doc.split()[:25])
        encoded = tokenizer.encode(sentence)
        rows.append((sentence, encoded[:25], tokenizer.decode(encoded)))
    return tokenizer, [markdown_table(("text", "ids", "decode(encode(text))"), rows)]


def run(
    corpus: Split,
    kind: str,
    settings: dict[str, Any],
    stage: dict[str, Any],
    loggers: Sequence[Logger],
    every_n_steps: int = 50,
) -> tuple[Tokenizer, dict[str, float]]:
    """Train the tokenizer ``kind`` with its ``settings`` and this stage's ``stage`` settings; log
    every step to ``loggers``, and the first, every ``every_n_steps``-th and the last to the console
    (a line per block of merges would bury everything else); return the tokenizer and its final
    metrics."""
    every_n_steps = max(1, every_n_steps)
    final: dict[str, float] = {}
    start = time.perf_counter()
    unshown: tuple[int, dict[str, float]] | None = None  # the newest step, when not shown: the last

    def show(step: int, metrics: dict[str, float]) -> None:
        shown = " ".join(f"{k}={number(v)}" for k, v in sorted(metrics.items()))
        log.info(f"[{time.perf_counter() - start:7.1f}s] step {step} {shown}")

    def report(step: int, metrics: dict[str, float]) -> None:
        nonlocal unshown
        final.update(metrics)
        for logger in loggers:
            logger.log_metrics(metrics, step)
        unshown = None if step == 1 or step % every_n_steps == 0 else (step, metrics)
        if unshown is None:
            show(step, metrics)

    tokenizer: Tokenizer
    if kind == "bpe":
        tokenizer, table = train_bpe_in_steps(corpus, report, **settings, **stage)
        title = "bpe/first_merges"
    elif kind == "simple":
        tokenizer, table = build_simple(corpus, report, **settings, **stage)
        title = "tokenizer/round_trips"
    else:
        raise ArgumentError("kind", f"a {kind!r} tokenizer is not trained", "use simple or bpe")
    if unshown is not None:
        show(*unshown)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(title, "\n".join(table))
    return tokenizer, final

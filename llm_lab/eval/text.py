"""Held-out text: negative log-likelihood per token, perplexity and bits per byte.

Loss per token cannot compare two tokenizers: a word-level model predicts fewer, harder units than
a 1k-merge BPE. Bits per byte divides the same total information, Σ −log₂ p, by the text's size in
UTF-8 bytes instead of its token count, so every model that reads the same text is on one scale
(Gao et al. 2020, "The Pile", §4; the harness's ``bits_per_byte``):

    bits per byte = Σ NLL / ln 2 / Σ bytes
    NLL per token = Σ NLL / Σ tokens,    perplexity = e^(NLL per token)

Each document is scored on its own, its first token predicted from ``<|endoftext|>``; a document
longer than the window is read in sliding windows that score every token once (see
:meth:`llm_lab.eval.scoring.Scorer.rolling_windows` for the ``stride``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from llm_lab.data.corpus import file_documents
from llm_lab.errors import DataError
from llm_lab.eval.files import field, read_jsonl
from llm_lab.eval.scoring import Scorer
from llm_lab.tokenizers.simple import UNK


def document_loglikelihoods(
    scorer: Scorer, documents: Sequence[str], stride: int | None = None
) -> list[tuple[float, int]]:
    """(log-likelihood in nats, tokens) of each document, every document's windows batched together."""
    owners: list[int] = []
    pairs = []
    for d, document in enumerate(documents):
        windows = scorer.rolling_windows(scorer.tokenizer.encode(document), stride)
        pairs += windows
        owners += [d] * len(windows)
    totals = [(0.0, 0)] * len(documents)
    for d, result in zip(owners, scorer.loglikelihoods(pairs), strict=True):
        value, tokens = totals[d]
        totals[d] = (value + result.value, tokens + result.tokens)
    return totals


def text_metrics(documents: Sequence[str], loglikelihoods: Sequence[tuple[float, int]]) -> dict[str, float]:
    """NLL per token, perplexity and bits per byte of scored documents, with the counts behind them."""
    nll = -sum(value for value, _ in loglikelihoods)
    tokens = sum(n for _, n in loglikelihoods)
    size = sum(len(document.encode("utf-8")) for document in documents)
    per_token = nll / max(tokens, 1)
    return {
        "bits_per_byte": nll / math.log(2) / max(size, 1),
        "nll_per_token": per_token,
        "perplexity": math.exp(per_token),
        "tokens": tokens,
        "bytes": size,
        "n": len(documents),
    }


def score_text(scorer: Scorer, documents: Sequence[str], stride: int | None = None) -> dict[str, float]:
    """:func:`text_metrics` of ``documents`` under ``scorer``'s model, and for a tokenizer with an
    unknown-word token the share of tokens it stands for (``unk_share``): a word-level tokenizer
    reads an unseen word as ``<|unk|>``, which is cheap to predict and says nothing of the word, so
    its bits per byte flatter it by as much as that share of the text is left unread."""
    metrics = text_metrics(documents, document_loglikelihoods(scorer, documents, stride))
    unk = scorer.tokenizer.token_to_id(UNK)
    if unk is not None:
        unknown = sum(scorer.tokenizer.encode(document).count(unk) for document in documents)
        metrics["unk_share"] = unknown / max(metrics["tokens"], 1)
    return metrics


def read_documents(path: str | Path) -> list[str]:
    """The documents of a held-out text file: a ``.jsonl`` holds one per row (field ``text``),
    any other file is read by the corpus rules (UTF-8; ``<|endoftext|>`` separates documents)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        documents = [field(row, path, "text", str, '{"text": "A document."}') for row in read_jsonl(path)]
    else:
        documents = list(file_documents(path))
    documents = [document for document in documents if document.strip()]
    if not documents:
        raise DataError(f"{path}: holds no text to score (give at least one non-empty document)")
    return documents

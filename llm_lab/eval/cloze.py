"""Cloze: predict the last word of a passage (LAMBADA, Paperno et al. 2016).

An item is a ``context`` and the ``word`` that ends it. As the harness scores LAMBADA, the word is
the continuation ``" " + word``, and

- ``acc`` counts the items where greedy decoding (the most likely token at every step) produces the
  whole word exactly, token for token;
- ``perplexity`` is e^(−mean log p(word | context)) over the items: how many equally likely words
  the model hesitates between, on average.

The baseline beside them is a unigram model's word perplexity (:mod:`llm_lab.eval.baselines`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_lab.errors import DataError
from llm_lab.eval.files import field, read_jsonl
from llm_lab.eval.scoring import LogLikelihood, Scorer


@dataclass(frozen=True)
class Cloze:
    """One item: the passage without its last word, and that word; ``where`` names its row."""

    context: str
    word: str
    where: str = ""


def read_cloze(path: str | Path) -> list[Cloze]:
    """Cloze items (``context``, ``word``) from a ``.jsonl`` file."""
    path = Path(path)
    items = []
    for row in read_jsonl(path):
        context = field(row, path, "context", str, '"context": "He opened the"')
        word = field(row, path, "word", str, '"word": "door"')
        if not word.strip() or word != word.strip():
            raise DataError(f"{path}, row {row['_row']}: word must be one word without spaces, got {word!r}")
        items.append(Cloze(context, word, f"{path}, row {row['_row']}"))
    return items


def score_cloze(scorer: Scorer, items: Sequence[Cloze]) -> list[LogLikelihood]:
    """log p(" " + word | context) of each item, and whether greedy decoding gives the word."""
    pairs = []
    for i, item in enumerate(items):
        pair = scorer.encode_pair(item.context, " " + item.word)
        if len(pair[1]) > scorer.context_length:
            raise DataError(
                f"{item.where or f'item {i}'}: the word is {len(pair[1])} tokens, more than the model's "
                f"window of {scorer.context_length} (use a model with a longer context)"
            )
        pairs.append(pair)
    return scorer.loglikelihoods(pairs)


def cloze_metrics(scored: Sequence[LogLikelihood]) -> dict[str, float]:
    """``acc`` (greedy exact match), the last word's ``perplexity``, and the item count ``n``."""
    n = len(scored)
    return {
        "acc": sum(s.is_greedy for s in scored) / n,
        "perplexity": math.exp(-sum(s.value for s in scored) / n),
        "n": n,
    }

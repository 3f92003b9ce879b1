"""What a score is worth: a unigram model, the best one can do knowing only token frequencies.

A unigram model predicts every token with its frequency in the training text, whatever came before
(Jurafsky & Martin, "Speech and Language Processing", 3rd ed., §3.1), with add-one smoothing so
that a token never seen in training still has a probability (§3.5). It reads text through the
run's own tokenizer, so its bits per byte sit on the same scale as the model's: the gap between
the two is what the model learned from context. Random-choice accuracy, the multiple-choice
baseline, is in :mod:`llm_lab.eval.multiple_choice`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from llm_lab.eval.cloze import Cloze
from llm_lab.eval.scoring import Scorer
from llm_lab.tokenizers.base import Tokenizer


class Unigram:
    """Add-one smoothed token frequencies: p(t) = (count(t) + 1) / (N + V)."""

    def __init__(self, counts: np.ndarray) -> None:
        self.logprobs = np.log(counts + 1.0) - math.log(counts.sum() + len(counts))

    @classmethod
    def fit(cls, tokenizer: Tokenizer, documents: Iterable[str]) -> Unigram:
        """Count the tokens of ``documents`` (the run's training split)."""
        counts = np.zeros(tokenizer.vocab_size, dtype=np.float64)
        for document in documents:
            np.add.at(counts, np.asarray(tokenizer.encode(document), dtype=np.int64), 1.0)
        return cls(counts)

    def loglikelihood(self, ids: Sequence[int]) -> float:
        """log p(ids) in nats: the sum of each token's log frequency."""
        return float(self.logprobs[np.asarray(ids, dtype=np.int64)].sum()) if len(ids) else 0.0

    def bits_per_byte(self, tokenizer: Tokenizer, documents: Sequence[str]) -> float:
        """Σ −log₂ p(token) over the documents' tokens, per UTF-8 byte of the documents."""
        nll = -sum(self.loglikelihood(tokenizer.encode(document)) for document in documents)
        return nll / math.log(2) / max(sum(len(d.encode("utf-8")) for d in documents), 1)

    def word_perplexity(self, scorer: Scorer, items: Sequence[Cloze]) -> float:
        """e^(−mean log p(word)) of cloze items' words, tokenized as the model reads them."""
        total = sum(
            self.loglikelihood(scorer.encode_pair(item.context, " " + item.word)[1]) for item in items
        )
        return math.exp(-total / len(items))

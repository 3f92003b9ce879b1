"""Intrinsic evaluation of word vectors: word similarity and analogies.

- Similarity (Finkelstein et al. 2002, WordSim-353 layout ``word1<TAB>word2<TAB>score``): Spearman's
  rank correlation between human scores and cosine similarities.
- Analogies (Mikolov et al. 2013a, ``questions-words.txt`` layout): for "a is to b as c is to d",
  predict d as the word nearest to b − a + c on unit vectors (3CosAdd), a, b and c excluded.

Words are compared lower-cased and pairs with an out-of-vocabulary word are skipped and counted, as
gensim's ``evaluate_word_pairs`` / ``evaluate_word_analogies`` do, so the numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llm_lab.errors import DataError

# Below these, a score says more about which few items happened to be in the vocabulary than about
# the vectors: a Spearman ρ over a handful of pairs swings wildly from run to run.
MIN_COVERAGE = 0.5  # of the file's items
MIN_ITEMS = 30


@dataclass
class EvalResult:
    score: float  # Spearman ρ, or analogy accuracy
    n_used: int
    n_skipped: int  # out-of-vocabulary

    @property
    def coverage(self) -> float:
        """The share of the file's items whose words are all in the vocabulary."""
        return self.n_used / max(self.n_used + self.n_skipped, 1)

    @property
    def meaningful(self) -> bool:
        """Whether enough items were scored for the score to mean something (see MIN_COVERAGE)."""
        return self.coverage >= MIN_COVERAGE and self.n_used >= MIN_ITEMS


def unit_rows(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (what Spearman's ρ needs)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x))
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of the ranks."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _lines(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"evaluation file {p} does not exist")
    return p.read_text(encoding="utf-8").splitlines()


def word_similarity(words: Sequence[str], vectors: np.ndarray, pairs_file: str | Path) -> EvalResult:
    index = {w.lower(): i for i, w in reversed(list(enumerate(words)))}
    unit = unit_rows(vectors)
    human, model, skipped = [], [], 0
    for line in _lines(pairs_file):
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        ia, ib = index.get(a.lower()), index.get(b.lower())
        if ia is None or ib is None:
            skipped += 1
            continue
        human.append(float(score))
        model.append(float(unit[ia] @ unit[ib]))
    rho = spearman(human, model) if len(human) > 1 else float("nan")
    return EvalResult(rho, len(human), skipped)


def word_analogies(
    words: Sequence[str], vectors: np.ndarray, questions_file: str | Path, batch: int = 2048
) -> EvalResult:
    index = {w.lower(): i for i, w in reversed(list(enumerate(words)))}
    quads, skipped = [], 0
    for line in _lines(questions_file):
        if line.startswith(":") or not line.strip():
            continue
        ids = [index.get(w.lower()) for w in line.split()]
        if len(ids) != 4 or any(i is None for i in ids):
            skipped += 1
            continue
        quads.append(ids)
    if not quads:
        return EvalResult(float("nan"), 0, skipped)
    q = np.asarray(quads)
    unit = unit_rows(vectors)
    correct = 0
    for s in range(0, len(q), batch):
        a, b, c, d = q[s : s + batch].T
        sims = unit_rows(unit[b] - unit[a] + unit[c]) @ unit.T
        rows = np.arange(len(a))
        sims[rows, a] = sims[rows, b] = sims[rows, c] = -np.inf
        correct += int((sims.argmax(axis=1) == d).sum())
    return EvalResult(correct / len(q), len(q), skipped)


def nearest_neighbours(
    words: Sequence[str], vectors: np.ndarray, probe: str, k: int = 8
) -> list[tuple[str, float]]:
    """The k words with the highest cosine similarity to ``probe`` (itself excluded)."""
    index = {w: i for i, w in enumerate(words)}
    unit = unit_rows(vectors)
    sims = unit @ unit[index[probe]]
    sims[index[probe]] = -np.inf
    best = np.argsort(-sims)[:k]
    return [(words[i], float(sims[i])) for i in best]

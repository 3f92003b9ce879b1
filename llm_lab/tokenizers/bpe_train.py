"""Training byte-level BPE: the incremental merge loop (Sennrich et al. 2016; CS336 assignment 1, §2).

Split from ``bpe.py`` (the tokenizer: encode, decode, formats) so that each file reads on its own:
this one is the algorithm of Raschka ch. 2.5 — count pre-tokens once, then merge the most frequent
adjacent pair again and again, updating only the counts that a merge changes.
"""

from __future__ import annotations

import gc
import heapq
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import pairwise

from llm_lab.errors import ConfigError
from llm_lab.tokenizers.formats import GPT2_BYTE_ORDER, Merges, Vocab


def _descending(token: bytes) -> tuple[int, ...]:
    """A sort key that orders byte strings from lexicographically greatest to least.

    Each byte is flipped (255 - x) and a terminator 256, larger than any flipped byte, makes a
    prefix sort *after* its extensions, just as ``b"ab" < b"abc"`` is reversed.
    """
    return (*(255 - x for x in token), 256)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while training.

    The merge loop allocates millions of small tuples and lists, none of them in reference cycles;
    each allocation burst would otherwise trigger collections that rescan every live object
    (this alone made setting up the pair counts about 5× slower).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class BPETrainer:
    """The BPE merge loop over a dictionary of pre-token counts (CS336 assignment 1, §2.4).

    The corpus is never re-read: every unique pre-token is a list of ids with its count, and the
    count of every adjacent pair is kept up to date *incrementally* — a merge only touches the
    words that contain the merged pair (found through an index pair → words) and changes the
    counts of their pairs. The most frequent pair is taken from a heap; ties go to the
    lexicographically greatest pair of byte strings, the CS336 convention.

    ``merge(n)`` can be called repeatedly, which lets a training loop show the vocabulary grow.
    """

    def __init__(self, counts: Mapping[str, int], special_tokens: Sequence[str] = ()) -> None:
        with _no_cyclic_gc():
            self._setup(counts, special_tokens)

    def _setup(self, counts: Mapping[str, int], special_tokens: Sequence[str]) -> None:
        self.vocab: Vocab = {i: token.encode("utf-8") for i, token in enumerate(special_tokens)}
        byte_id = [0] * 256
        for b in GPT2_BYTE_ORDER:
            byte_id[b] = len(self.vocab)
            self.vocab[byte_id[b]] = bytes([b])
        self.merges: Merges = []
        self.merge_counts: list[int] = []  # how often each merged pair occurred when merged
        self._words = [[byte_id[b] for b in word.encode("utf-8")] for word in counts]
        self._freqs = list(counts.values())
        self._pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        # Which words contain a pair. Entries may go stale (the pair was merged away inside the
        # word by another merge); they are skipped when used, which is cheaper than deleting them.
        self._where: dict[tuple[int, int], list[int]] = defaultdict(list)
        for w, word in enumerate(self._words):
            for pair in pairwise(word):
                self._pair_counts[pair] += self._freqs[w]
            for pair in set(pairwise(word)):
                self._where[pair].append(w)
        self._key = {i: _descending(token) for i, token in self.vocab.items()}
        # Heap of (-count, key a, key b, pair): the smallest entry is the most frequent pair and,
        # among equals, the greatest. Entries are not updated in place: a count that grows pushes
        # a new entry, and an entry whose count fell is noticed (and re-pushed) when popped.
        self._heap = [(-c, self._key[a], self._key[b], (a, b)) for (a, b), c in self._pair_counts.items()]
        heapq.heapify(self._heap)

    def merge(self, max_merges: int) -> int:
        """Perform up to ``max_merges`` merges; returns how many were possible."""
        with _no_cyclic_gc():
            for done in range(max_merges):
                pair = self._pop_best()
                if pair is None:  # every word is a single token: nothing left to merge
                    return done
                self._apply(pair)
        return max_merges

    def _pop_best(self) -> tuple[int, int] | None:
        heap, counts = self._heap, self._pair_counts
        while heap:
            negative_count, _, _, pair = heapq.heappop(heap)
            count = counts.get(pair, 0)
            if count == -negative_count:
                return pair
            if 0 < count < -negative_count:  # stale, too high: requeue with the true count
                heapq.heappush(heap, (-count, self._key[pair[0]], self._key[pair[1]], pair))
        return None

    def _apply(self, pair: tuple[int, int]) -> None:
        a, b = pair
        new_id = len(self.vocab)
        self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._key[new_id] = _descending(self.vocab[new_id])
        self.merges.append((self.vocab[a], self.vocab[b]))
        self.merge_counts.append(self._pair_counts[pair])
        # Net change of each pair count over all touched words; only pairs whose count grew need
        # a new heap entry, and only the words that contain the pair are visited at all.
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for w in self._where.pop(pair):
            self._merge_in_word(w, a, b, new_id, delta)
        counts = self._pair_counts
        del counts[pair]
        delta.pop(pair, None)
        for p, change in delta.items():
            if change == 0:
                continue
            count = counts[p] + change
            if count <= 0:
                del counts[p]
                continue
            counts[p] = count
            if change > 0:
                heapq.heappush(self._heap, (-count, self._key[p[0]], self._key[p[1]], p))

    def _merge_in_word(self, w: int, a: int, b: int, new_id: int, delta: dict[tuple[int, int], int]) -> None:
        """Merge every ``a b`` in word ``w`` (left to right) and record how its pairs change.

        Each merged occurrence ``x a b y`` becomes ``x ab y``: the pairs (x, a) and (b, y) lose
        the word's count and (x, ab), (ab, y) gain it; no other pair of the word changes. In
        ``a b a b`` the middle (ab, a) is added by the first merge and removed by the second.
        """
        word, freq = self._words[w], self._freqs[w]
        out: list[int] = []
        i, n, merged = 0, len(word), False
        while True:
            try:
                j = word.index(a, i)  # jump to the next candidate in C instead of stepping
            except ValueError:
                break
            if j + 1 == n or word[j + 1] != b:
                out.extend(word[i : j + 1])
                i = j + 1
                continue
            out.extend(word[i:j])
            if out:
                delta[out[-1], a] -= freq
                delta[out[-1], new_id] += freq
                self._index(out[-1], new_id, w)
            if j + 2 < n:
                delta[b, word[j + 2]] -= freq
                delta[new_id, word[j + 2]] += freq
                self._index(new_id, word[j + 2], w)
            out.append(new_id)
            i, merged = j + 2, True
        if merged:  # else a stale index entry: the pair was merged away by an earlier merge
            out.extend(word[i:])
            self._words[w] = out

    def _index(self, x: int, y: int, w: int) -> None:
        """Note that word ``w`` contains the pair (x, y), once even if it occurs twice."""
        words = self._where[x, y]
        if not words or words[-1] != w:
            words.append(w)


def check_bpe_config(vocab_size: int, special_tokens: Sequence[str], prefix: str = "tokenizer") -> None:
    """Reject impossible settings early; errors name ``<prefix>.vocab_size`` and so on."""
    check_special_tokens(special_tokens, f"{prefix}.special_tokens")
    smallest = 256 + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise ConfigError(
            f"{prefix}.vocab_size",
            f"{vocab_size!r} is too small",
            f"use at least 256 bytes + {len(special_tokens)} special = {smallest}",
        )


def check_special_tokens(special_tokens: Sequence[str], key: str) -> None:
    if isinstance(special_tokens, str):
        raise ConfigError(key, "must be a list of strings, got one string", f"write [{special_tokens!r}]")
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise ConfigError(key, f"{token!r} is not a non-empty string")
    duplicates = sorted({t for t in special_tokens if list(special_tokens).count(t) > 1})
    if duplicates:
        raise ConfigError(key, f"listed twice: {duplicates}", "list each special token once")


def train_bpe(
    counts: Mapping[str, int], vocab_size: int, special_tokens: Sequence[str] = ()
) -> tuple[Vocab, Merges]:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from pre-token counts.

    Stops early, with a smaller vocabulary, when every pre-token has become a single token.
    """
    trainer = BPETrainer(counts, special_tokens)
    trainer.merge(vocab_size - len(trainer.vocab))
    return trainer.vocab, trainer.merges

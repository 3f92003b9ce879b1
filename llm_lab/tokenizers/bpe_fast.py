"""Byte-level BPE made fast: the same merges and ids as ``bpe.py``, with the tricks a corpus needs.

``bpe.py`` states the algorithm; this file changes how it is computed, never what it computes
(its tests compare the two on the CS336 fixture, on generated texts full of ties, and on hostile
texts). Each trick, and what it saves:

Training (:class:`BPETrainer`, the CS336 assignment 1 §2.4 "optimizing the merging step"):

1. *Incremental pair counts.* The readable loop recounts every pair of every word before each
   merge. Here the counts are kept up to date: a merge only visits the words that contain the
   merged pair (an index pair → words says which) and changes the counts of the pairs around each
   occurrence. The index is never cleaned: an entry whose pair was merged away inside a word is
   skipped when visited, which is cheaper than deleting it.
2. *A heap with stale entries.* The most frequent pair comes from a heap of (-count, key a, key b).
   Counts change all the time and a heap cannot update in place, so a count that grows pushes a
   new entry, and a popped entry whose count has fallen since is pushed back with the true count.
   Ties must go to the lexicographically greatest pair, but a min-heap pops the smallest:
   :func:`_descending` turns a byte string into a key that sorts in reverse order.
3. *No cyclic garbage collection while merging.* The loop allocates millions of small tuples and
   lists, none in a reference cycle; each burst would trigger a collection that rescans every live
   object (this alone made setting up the pair counts about 5× slower).

Encoding (:class:`FastBPETokenizer`):

4. *A rank list* (tiktoken's ``byte_pair_merge``): ``ranks[i]`` is the rank of the pair at i; a
   merge only looks up the two pairs around the new token, and finding the lowest rank (``min``,
   then ``index`` for the leftmost) runs in C instead of rebuilding the pair statistics.
5. *A pre-token cache.* Natural text repeats a small set of pre-tokens, so each distinct one is
   merged once and then looked up; the cache is emptied when it is full, so memory stays bounded.
6. *Streaming.* :meth:`FastBPETokenizer.encode_iterable` encodes a file (or any stream of strings)
   in blocks, holding back what the next string could still change.
"""

from __future__ import annotations

import gc
import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain, pairwise, repeat
from pathlib import Path

from llm_lab.errors import DataError
from llm_lab.tokenizers.bpe import AllowedSpecial, BPETokenizer, cached_splitter, initial_vocab
from llm_lab.tokenizers.formats import Merges, Vocab
from llm_lab.tokenizers.pretokenize import GPT2_REGEX

# Encoding remembers the ids of about this many distinct pre-tokens (trick 5).
CACHE_SIZE = 1 << 16
# encode_iterable encodes its buffer whenever it holds this many characters (trick 6).
STREAM_BLOCK = 1 << 16


def _descending(token: bytes) -> tuple[int, ...]:
    """A sort key that orders byte strings from lexicographically greatest to least.

    Each byte is flipped (255 - x) and a terminator 256, larger than any flipped byte, makes a
    prefix sort *after* its extensions, just as ``b"ab" < b"abc"`` is reversed.
    """
    return (*(255 - x for x in token), 256)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Trick 3: pause the cyclic garbage collector, and restore it as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class BPETrainer:
    """The merge loop of :meth:`BPETokenizer.learn_merges`, with the same merges, made incremental.

    Tricks 1–3 of the module doc. ``merge(n)`` performs up to ``n`` merges and can be called
    again, which lets a training loop show the vocabulary grow; ``merge_counts`` records how often
    each merged pair occurred when it was merged.
    """

    def __init__(self, counts: Mapping[str, int], special_tokens: Sequence[str] = ()) -> None:
        with _no_cyclic_gc():
            self._setup(counts, special_tokens)

    def _setup(self, counts: Mapping[str, int], special_tokens: Sequence[str]) -> None:
        self.vocab: Vocab = initial_vocab(special_tokens)
        byte_id = [0] * 256
        for i, token in self.vocab.items():
            if i >= len(special_tokens):
                byte_id[token[0]] = i
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


class FastBPETokenizer(BPETokenizer):
    """:class:`~llm_lab.tokenizers.bpe.BPETokenizer` with tricks 1–6: what the lab's stages use."""

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] = (),
    ) -> None:
        super().__init__(vocab, merges, special_tokens)
        self._cache: dict[str, list[int]] = {}

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_cache": {}}  # a worker process fills its own cache

    @staticmethod
    def learn_merges(
        counts: Mapping[str, int], vocab_size: int, special_tokens: Sequence[str] = ()
    ) -> tuple[Vocab, Merges]:
        trainer = BPETrainer(counts, special_tokens)
        trainer.merge(vocab_size - len(trainer.vocab))
        return trainer.vocab, trainer.merges

    def _encode_pretoken(self, piece: str) -> list[int]:
        """Trick 4: merge the leftmost lowest-ranked pair, updating only its neighbours' ranks."""
        ids = list(map(self._byte_ids.__getitem__, piece.encode("utf-8")))
        get, no_merge = self._rank.get, len(self.merges)
        ranks = list(map(get, pairwise(ids), repeat(no_merge)))
        while ranks:
            rank = min(ranks)
            if rank == no_merge:
                break
            i = ranks.index(rank)
            ids[i : i + 2] = (self._merged_id[rank],)
            del ranks[i]
            if i > 0:
                ranks[i - 1] = get((ids[i - 1], ids[i]), no_merge)
            if i < len(ranks):
                ranks[i] = get((ids[i], ids[i + 1]), no_merge)
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        self._encode_pieces(GPT2_REGEX.findall(text), out)

    def _encode_pieces(self, pieces: list[str], out: list[int]) -> None:
        """Trick 5: each distinct pre-token is merged once, then looked up."""
        cache = self._cache
        if len(cache) > CACHE_SIZE:
            cache.clear()
        start = len(out)
        try:  # the common case once the cache is warm: every piece is known
            out.extend(chain.from_iterable(map(cache.__getitem__, pieces)))
        except KeyError:
            del out[start:]
            for piece in set(pieces).difference(cache):
                cache[piece] = self._encode_pretoken(piece)
            out.extend(chain.from_iterable(map(cache.__getitem__, pieces)))

    def encode_iterable(
        self, iterable: Iterable[str], allowed_special: AllowedSpecial = "all"
    ) -> Iterator[int]:
        """Trick 6: the ids of the concatenated strings (e.g. a file's lines), in bounded memory.

        Ids equal ``encode("".join(iterable))``: text is encoded in blocks, and what the next
        string could still change is held back — the last pre-token (a run of spaces may grow)
        and any tail that begins a special token.
        """
        names = self._allowed(allowed_special)
        splitter = cached_splitter(names)
        prefixes = {t[:k] for t in names for k in range(1, len(t))}
        longest = max(map(len, prefixes), default=0)
        buffer = ""
        for text in iterable:
            buffer += text
            if len(buffer) < STREAM_BLOCK:
                continue
            cut = len(buffer)
            for k in range(min(longest, len(buffer)), 0, -1):
                if buffer[-k:] in prefixes:
                    cut -= k
                    break
            parts = splitter.split(buffer[:cut]) if splitter else [buffer[:cut]]
            pieces = GPT2_REGEX.findall(parts[-1])
            held = (pieces.pop() if pieces else "") + buffer[cut:]
            ids: list[int] = []
            self._encode_parts(parts[:-1], ids)
            self._encode_pieces(pieces, ids)
            yield from ids
            buffer = held
        yield from self.encode(buffer, allowed_special)

    def encode_file(self, path: str | Path, allowed_special: AllowedSpecial = "all") -> Iterator[int]:
        """Stream the ids of a UTF-8 file (see :meth:`encode_iterable`); the file is never read whole."""
        path = Path(path)
        try:
            with path.open(encoding="utf-8") as f:
                yield from self.encode_iterable(f, allowed_special)
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None

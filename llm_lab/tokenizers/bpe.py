"""Byte-level byte-pair encoding, the readable version: train, encode, decode (Raschka ch. 2.5).

BPE (Sennrich et al. 2016, after Gage 1994) starts from single symbols and repeatedly merges the
most frequent adjacent pair into a new symbol. GPT-2 (Radford et al. 2019, §2.2) runs it on the
UTF-8 *bytes* of pre-tokenized text (``pretokenize.py``), so any string can be encoded and no
token is ever unknown. This file is the algorithm as its definition states it, in the shape of
minbpe: :func:`get_stats` counts adjacent pairs, :func:`merge` replaces a pair by its new token,
training recounts every pair before each merge (Stanford CS336 assignment 1, §2.4; ties go to the
lexicographically greatest pair of byte strings), and encoding merges the lowest-ranked pair inside
each pre-token until none is left. ``bpe_fast.py`` computes the same merges and the same ids with
the tricks a large corpus needs; its tests hold it to this file.

Id layout of a trained vocabulary (that of the CS336 reference and of HF `tokenizers`): special
tokens first, then the 256 single bytes in GPT-2's order, then one id per merge in merge order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.formats import (
    GPT2_BYTE_ORDER,
    Merges,
    Vocab,
    hf_tokenizer_json,
    read_gpt2_files,
    read_hf_tokenizer_json,
    str_to_token,
    token_to_str,
)
from llm_lab.tokenizers.pretokenize import GPT2_REGEX, count_corpus, special_splitter

Pair = tuple[int, int]
AllowedSpecial = Literal["all", "none"] | Collection[str]
T = TypeVar("T", bound="BPETokenizer")
# The special-token splitter of each set of allowed tokens, compiled once per process.
cached_splitter = lru_cache(maxsize=64)(special_splitter)

log = logging.getLogger(__name__)


def get_stats(ids: Sequence[int], stats: Counter[Pair] | None = None, weight: int = 1) -> Counter[Pair]:
    """Add ``weight`` to the count of each adjacent pair of ``ids`` (into ``stats`` if given)."""
    stats = Counter() if stats is None else stats
    for pair in zip(ids, ids[1:], strict=False):
        stats[pair] += weight
    return stats


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> tuple[int, ...]:
    """``ids`` with each occurrence of ``pair``, taken left to right, replaced by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def initial_vocab(special_tokens: Sequence[str]) -> Vocab:
    """Special tokens, then the 256 single bytes in GPT-2's order: the vocabulary before any merge."""
    vocab = {i: token.encode("utf-8") for i, token in enumerate(special_tokens)}
    vocab.update({len(vocab) + k: bytes([b]) for k, b in enumerate(GPT2_BYTE_ORDER)})
    return vocab


class BPETokenizer:
    """A byte-level BPE tokenizer: ``vocab`` {id: bytes}, ``merges`` in rank order, special tokens.

    Encoding follows GPT-2 and tiktoken: special tokens are cut out first, the rest is split with
    the GPT-2 pattern, and each pre-token is merged on its own. A special token that is not
    allowed (``allowed_special``) is plain text, like tiktoken's ``encode_ordinary``.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] = (),
    ) -> None:
        check_special_tokens(special_tokens)
        self.vocab: Vocab = dict(vocab)
        self.merges: Merges = list(merges)
        by_bytes = {token: i for i, token in sorted(self.vocab.items(), reverse=True)}
        self.special_tokens: dict[str, int] = {}
        for token in special_tokens:
            i = by_bytes.get(token.encode("utf-8"))
            if i is None:  # a special token the vocabulary lacks gets the next free id
                i = max(self.vocab, default=-1) + 1
                self.vocab[i] = token.encode("utf-8")
            self.special_tokens[token] = i
        self._special_of = {i: s for s, i in self.special_tokens.items()}
        # Ordinary tokens by their bytes; the lowest id wins if a byte string appears twice.
        special_ids = set(self.special_tokens.values())
        self._id_of = {t: i for i, t in sorted(self.vocab.items(), reverse=True) if i not in special_ids}
        missing = [b for b in range(256) if bytes([b]) not in self._id_of]
        if missing:
            raise ArgumentError(
                "vocab", f"lacks the single bytes {missing[:8]}", "byte-level BPE needs all 256"
            )
        self._byte_ids = [self._id_of[bytes([b])] for b in range(256)]
        # What encoding looks up: the rank of a pair of ids, and the id each merge creates.
        self._rank: dict[Pair, int] = {}
        self._merged_id: list[int] = []
        for rank, (a, b) in enumerate(self.merges):
            if a not in self._id_of or b not in self._id_of or a + b not in self._id_of:
                raise ArgumentError(
                    "merges",
                    f"merge {rank} ({a!r}, {b!r}) uses a token not in the vocabulary",
                    "give the vocabulary these merges were made with",
                )
            self._rank.setdefault((self._id_of[a], self._id_of[b]), rank)
            self._merged_id.append(self._id_of[a + b])

    # ------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls: type[T],
        vocab_size: int,
        *,
        text: str | None = None,
        files: Sequence[str | Path] | None = None,
        documents: Iterable[str] | None = None,
        special_tokens: Sequence[str] = (),
        num_workers: int | None = None,
    ) -> T:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from exactly one source:
        ``text`` (the text itself), ``files`` (a list of UTF-8 files) or ``documents`` (any
        iterable of strings, e.g. a generator; no pre-token spans two documents).

        Pre-tokens are counted by ``num_workers`` processes (default: one per CPU), in memory that
        grows with the number of distinct pre-tokens, not with the corpus. Training stops early,
        with a smaller vocabulary, when every pre-token has become a single token.
        """
        check_special_tokens(special_tokens)
        check_vocab_size(vocab_size, special_tokens)
        counts = count_corpus(
            text=text,
            files=files,
            documents=documents,
            special_tokens=special_tokens,
            num_workers=num_workers,
        )
        if not counts:
            raise DataError("the training corpus is empty (no text outside special tokens)")
        tokenizer = cls(*cls.learn_merges(counts, vocab_size, special_tokens), special_tokens)
        if tokenizer.vocab_size < vocab_size:
            log.warning(
                "vocab_size=%d: BPE stopped at %d tokens, every pre-token of the corpus is one token "
                "(a larger corpus gives more merges)",
                vocab_size,
                tokenizer.vocab_size,
            )
        return tokenizer

    @staticmethod
    def learn_merges(
        counts: Mapping[str, int], vocab_size: int, special_tokens: Sequence[str] = ()
    ) -> tuple[Vocab, Merges]:
        """The merge loop over pre-token counts, recounting every pair before each merge."""
        vocab = initial_vocab(special_tokens)
        byte_id = {token[0]: i for i, token in vocab.items() if i >= len(special_tokens)}
        words = {tuple(byte_id[b] for b in word.encode("utf-8")): n for word, n in counts.items()}
        merges: Merges = []
        while len(vocab) < vocab_size:
            stats: Counter[Pair] = Counter()
            for word, n in words.items():
                get_stats(word, stats, n)
            if not stats:  # every pre-token is a single token: nothing left to merge
                break
            a, b = max(stats, key=lambda p: (stats[p], vocab[p[0]], vocab[p[1]]))
            new_id = len(vocab)
            vocab[new_id] = vocab[a] + vocab[b]
            merges.append((vocab[a], vocab[b]))
            words = {merge(word, (a, b), new_id): n for word, n in words.items()}
        return vocab, merges

    # ------------------------------------------------------------------------------- encoding
    def encode(self, text: str, allowed_special: AllowedSpecial = "all") -> list[int]:
        """Token ids of ``text``; ``allowed_special`` is "all", "none" or a set of special tokens."""
        if not isinstance(text, str):
            raise ArgumentError(
                "text",
                f"is a {type(text).__name__}, not a str",
                "encode a file with FastBPETokenizer.encode_file",
            )
        splitter = cached_splitter(self._allowed(allowed_special))
        ids: list[int] = []
        self._encode_parts(splitter.split(text) if splitter else [text], ids)
        return ids

    def _allowed(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        if allowed_special == "none":
            return frozenset()
        names = frozenset(allowed_special)
        unknown = sorted(names - self.special_tokens.keys())
        if unknown:
            raise ArgumentError(
                "allowed_special",
                f"names tokens that are not special here: {unknown}",
                "name only the special tokens",
            )
        return names

    def _encode_parts(self, parts: list[str], out: list[int]) -> None:
        """Append the ids of a special-token split: the special tokens are the odd-numbered parts."""
        for i, part in enumerate(parts):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                self._encode_ordinary(part, out)

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Append the ids of ``text`` (no special tokens in it): pre-token by pre-token."""
        for piece in GPT2_REGEX.findall(text):
            out.extend(self._encode_pretoken(piece))

    def _encode_pretoken(self, piece: str) -> list[int]:
        """Merge the lowest-ranked adjacent pair of ``piece``'s bytes until no pair is a merge."""
        ids: Sequence[int] = [self._byte_ids[b] for b in piece.encode("utf-8")]
        while len(ids) >= 2:
            pair = min(get_stats(ids), key=lambda p: self._rank.get(p, len(self.merges)))
            if pair not in self._rank:
                break
            ids = merge(ids, pair, self._merged_id[self._rank[pair]])
        return list(ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        vocab = self.vocab
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # also numpy / torch
        try:
            data = b"".join([vocab[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in vocab)
            raise DataError(f"token id {bad!r} is not in the vocabulary (ids run 0..{max(vocab)})") from None
        return data.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------------ the vocabulary
    @property
    def vocab_size(self) -> int:
        """Rows an embedding table needs: one more than the largest id."""
        return max(self.vocab) + 1

    def id_to_token(self, i: int) -> str:
        """A special token's text, or an ordinary token's bytes in GPT-2's printable form ("Ġthe")."""
        if i not in self.vocab:
            raise DataError(f"token id {i!r} is not in the vocabulary (ids run 0..{max(self.vocab)})")
        return self._special_of.get(i) or token_to_str(self.vocab[i])

    def token_to_id(self, token: str) -> int | None:
        """Inverse of :meth:`id_to_token`; ``None`` for a token the vocabulary lacks."""
        if token in self.special_tokens:
            return self.special_tokens[token]
        try:
            return self._id_of.get(str_to_token(token))
        except DataError:  # not GPT-2 printable characters: no byte-level token is spelled so
            return None

    # ---------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write a HF ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file`` reads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(hf_tokenizer_json(self.vocab, self.merges, self.special_tokens), encoding="utf-8")
        return path

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Read a byte-level BPE ``tokenizer.json`` (ours or one written by HF `tokenizers`)."""
        vocab, merges, specials = read_hf_tokenizer_json(Path(path))
        try:
            return cls(vocab, merges, sorted(specials, key=specials.__getitem__))
        except ArgumentError as e:
            raise DataError(f"{path}: {e}") from None

    @classmethod
    def from_gpt2_files(
        cls: type[T], vocab_json: str | Path, merges_txt: str | Path, special_tokens: Sequence[str] = ()
    ) -> T:
        """Load GPT-2's ``encoder.json`` + ``vocab.bpe``; ``<|endoftext|>`` keeps its id 50256
        when it is named in ``special_tokens`` (otherwise it is plain text)."""
        vocab, merges, literal = read_gpt2_files(Path(vocab_json), Path(merges_txt))
        vocab.update({i: text.encode("utf-8") for text, i in literal.items()})
        try:
            return cls(vocab, merges, special_tokens)
        except ArgumentError as e:
            raise DataError(f"{vocab_json}, {merges_txt}: {e}") from None


def check_vocab_size(vocab_size: int, special_tokens: Sequence[str]) -> None:
    """A vocabulary holds at least the 256 bytes and the special tokens."""
    smallest = 256 + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise ArgumentError(
            "vocab_size",
            f"{vocab_size!r} is too small",
            f"use at least 256 bytes + {len(special_tokens)} special = {smallest}",
        )


def check_special_tokens(special_tokens: Sequence[str]) -> None:
    """Special tokens are a list of distinct, non-empty strings."""
    if isinstance(special_tokens, str):
        raise ArgumentError(
            "special_tokens", "must be a list of strings, got one string", f"write [{special_tokens!r}]"
        )
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise ArgumentError(
                "special_tokens", f"{token!r} is not a non-empty string", "e.g. <|endoftext|>"
            )
    duplicates = sorted({t for t in special_tokens if list(special_tokens).count(t) > 1})
    if duplicates:
        raise ArgumentError("special_tokens", f"listed twice: {duplicates}", "list each special token once")

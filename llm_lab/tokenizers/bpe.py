"""Byte-level byte-pair encoding: the tokenizer — encoding, decoding, formats (GPT-2's tokenizer).

BPE (Sennrich et al. 2016, after Gage 1994) starts from single symbols and repeatedly merges the
most frequent adjacent pair into a new symbol. GPT-2 (Radford et al. 2019, §2.2) runs it on the
UTF-8 *bytes* of pre-tokenized text, so any string can be encoded with no unknown token. See
Raschka, "Build a Large Language Model (From Scratch)", ch. 2.5, and Stanford CS336 assignment 1,
§2 for the training algorithm, implemented in ``bpe_train.py``.

Id layout of a trained vocabulary (that of the CS336 reference and of HF `tokenizers`): special
tokens first, then the 256 single bytes in GPT-2's order, then one id per merge in merge order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from itertools import chain, pairwise, repeat
from pathlib import Path
from typing import Any, Literal

from llm_lab.errors import ConfigError, DataError
from llm_lab.tokenizers.bpe_train import check_bpe_config, check_special_tokens, train_bpe
from llm_lab.tokenizers.formats import (
    Merges,
    Vocab,
    hf_tokenizer_json,
    read_gpt2_files,
    read_hf_tokenizer_json,
    tiktoken_ranks,
)
from llm_lab.tokenizers.pretokenize import GPT2_PATTERN, GPT2_REGEX, count_source, special_splitter

# Encoding remembers the ids of about this many distinct pre-tokens (see _encode_pieces).
_CACHE_SIZE = 1 << 16
# encode_iterable encodes its buffer whenever it holds this many characters.
_STREAM_BLOCK = 1 << 16


class BPETokenizer:
    """A byte-level BPE tokenizer: ``vocab`` {id: bytes}, ``merges`` in rank order, specials.

    Encoding follows GPT-2 and tiktoken: special tokens are cut out first, the rest is split with
    the GPT-2 pattern, and inside each pre-token the adjacent pair with the lowest merge rank is
    merged until none is left. A special token that is not allowed (``allowed_special``) is
    treated as plain text, like tiktoken's ``encode_ordinary``; it is never an error.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] = (),
    ) -> None:
        check_special_tokens(special_tokens, "tokenizer.special_tokens")
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
        # Ordinary tokens by their bytes: the lowest id wins if a byte string appears twice.
        special_ids = set(self.special_tokens.values())
        ids = {t: i for i, t in sorted(self.vocab.items(), reverse=True) if i not in special_ids}
        missing = [b for b in range(256) if bytes([b]) not in ids]
        if missing:
            raise DataError(f"the vocabulary lacks single bytes {missing[:8]}: not byte-level BPE")
        self._byte_ids = [ids[bytes([b])] for b in range(256)]
        # (id a, id b) → rank, and rank → id of a+b: what encoding looks up for every pair. A
        # pair that is no merge gets the rank len(merges), larger than every real one.
        self._rank: dict[tuple[int, int], int] = {}
        self._merged_id: list[int] = []
        for rank, (a, b) in enumerate(self.merges):
            if a not in ids or b not in ids or a + b not in ids:
                raise DataError(f"merge {rank} ({a!r}, {b!r}) uses a token not in the vocabulary")
            self._rank.setdefault((ids[a], ids[b]), rank)
            self._merged_id.append(ids[a + b])
        self._cache: dict[str, list[int]] = {}
        self._splitter = lru_cache(maxsize=8)(special_splitter)

    # ----------------------------------------------------------------- training and loading
    @classmethod
    def train(
        cls,
        source: str | Path | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        num_workers: int | None = None,
    ) -> BPETokenizer:
        """Train on ``source``: a ``str`` is the text itself, a ``pathlib.Path`` a UTF-8 file,
        any other iterable of ``str`` a sequence of documents (see ``pretokenize.count_source``).

        Pre-tokens are counted in parallel (``num_workers`` processes, default one per CPU) when
        the text is large. The vocabulary is special tokens, 256 bytes, then the merges.
        """
        check_bpe_config(vocab_size, special_tokens)
        if isinstance(source, Path) and not source.is_file():
            raise DataError(f"{source}: no such file to train on")
        counts = count_source(source, special_tokens, num_workers)
        if not counts:
            raise DataError("the training corpus is empty (no text outside special tokens)")
        vocab, merges = train_bpe(counts, vocab_size, special_tokens)
        return cls(vocab, merges, special_tokens)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a byte-level BPE ``tokenizer.json`` (ours or one written by HF `tokenizers`)."""
        vocab, merges, specials = read_hf_tokenizer_json(Path(path))
        try:
            return cls(vocab, merges, sorted(specials, key=specials.__getitem__))
        except (DataError, ConfigError) as e:
            raise DataError(f"{path}: {e}") from None

    @classmethod
    def from_gpt2_files(
        cls, vocab_json: str | Path, merges_txt: str | Path, special_tokens: Sequence[str] = ()
    ) -> BPETokenizer:
        """Load GPT-2's ``encoder.json`` + ``vocab.bpe``; ``<|endoftext|>`` keeps its id 50256
        when it is named in ``special_tokens`` (otherwise it is plain text)."""
        vocab, merges, literal = read_gpt2_files(Path(vocab_json), Path(merges_txt))
        vocab.update({i: text.encode("utf-8") for text, i in literal.items()})
        try:
            return cls(vocab, merges, special_tokens)
        except DataError as e:
            raise DataError(f"{vocab_json}, {merges_txt}: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write a HF ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file`` reads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(hf_tokenizer_json(self.vocab, self.merges, self.special_tokens), encoding="utf-8")
        return path

    def tiktoken_ranks(self) -> dict[bytes, int]:
        """``mergeable_ranks`` for ``tiktoken.Encoding`` (ordinary tokens' bytes → id)."""
        return tiktoken_ranks(self.vocab, set(self.special_tokens.values()))

    def to_tiktoken(self, name: str = "llm_lab_bpe") -> Any:
        """A ``tiktoken.Encoding`` with our ranks, the GPT-2 pattern and our special tokens."""
        import tiktoken  # optional dependency: only needed for this interop

        return tiktoken.Encoding(
            name,
            pat_str=GPT2_PATTERN,
            mergeable_ranks=self.tiktoken_ranks(),
            special_tokens=dict(self.special_tokens),
        )

    @property
    def vocab_size(self) -> int:
        """Rows an embedding table needs: one more than the largest id."""
        return max(self.vocab) + 1

    # --------------------------------------------------------------------------- encoding
    def _allowed(self, allowed_special: Literal["all", "none"] | Collection[str]) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        if allowed_special == "none":
            return frozenset()
        names = frozenset(allowed_special)
        if not names <= self.special_tokens.keys():
            unknown = sorted(names - self.special_tokens.keys())
            raise ValueError(f"allowed_special names tokens that are not special here: {unknown}")
        return names

    def _encode_piece(self, piece: str) -> list[int]:
        """Merge inside one pre-token: the leftmost adjacent pair of lowest rank, until none.

        As tiktoken's ``byte_pair_merge``: ``ranks[i]`` is the rank of the pair (ids[i], ids[i+1]),
        and after a merge only the two pairs around the new token are looked up again, while
        finding the lowest rank (``min``, then ``index`` for the leftmost) runs in C.
        """
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

    def _encode_pieces(self, pieces: list[str], out: list[int]) -> None:
        # Natural text repeats a small set of pre-tokens, so each distinct one is merged once and
        # then looked up. The cache is emptied between calls once it is full: memory stays
        # bounded in encode_iterable, and one call never holds more than its own pieces.
        cache = self._cache
        if len(cache) > _CACHE_SIZE:
            cache.clear()
        start = len(out)
        try:  # the common case once the cache is warm: every piece is known
            out.extend(chain.from_iterable(map(cache.__getitem__, pieces)))
        except KeyError:
            del out[start:]
            for piece in set(pieces).difference(cache):
                cache[piece] = self._encode_piece(piece)
            out.extend(chain.from_iterable(map(cache.__getitem__, pieces)))

    def _encode_parts(self, parts: list[str], out: list[int]) -> None:
        """Encode the result of a special-token split: specials at odd indices."""
        for i, part in enumerate(parts):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                self._encode_pieces(GPT2_REGEX.findall(part), out)

    def encode(
        self, text: str, allowed_special: Literal["all", "none"] | Collection[str] = "all"
    ) -> list[int]:
        """Token ids of ``text``; ``allowed_special`` is "all", "none" or a set of tokens."""
        splitter = self._splitter(self._allowed(allowed_special))
        ids: list[int] = []
        self._encode_parts(splitter.split(text) if splitter else [text], ids)
        return ids

    def encode_iterable(
        self, iterable: Iterable[str], allowed_special: Literal["all", "none"] | Collection[str] = "all"
    ) -> Iterator[int]:
        """Stream the ids of the concatenated strings (e.g. a file's lines) in bounded memory.

        Ids equal ``encode("".join(iterable))``: text is encoded in blocks, and what the next
        string could still change is held back — the last pre-token (a run of spaces may grow)
        and any tail that begins a special token.
        """
        names = self._allowed(allowed_special)
        splitter = self._splitter(names)
        prefixes = {t[:k] for t in names for k in range(1, len(t))}
        longest = max(map(len, prefixes), default=0)
        buffer = ""
        for text in iterable:
            buffer += text
            if len(buffer) < _STREAM_BLOCK:
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

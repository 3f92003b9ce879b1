"""The lab's merges in a compiled encoder: the same ids, many times faster than Python.

A byte-level BPE is data — a vocabulary, merges, a pre-tokenizer pattern, special tokens — so the
tokenizer the lab trained can be handed to tiktoken (built from its ranks and the GPT-2 pattern)
or to Hugging Face ``tokenizers`` (from the ``tokenizer.json`` it writes), which then encode with
the lab's ids. :class:`BatchEncoder` is that hand-over behind one small interface
(``encode_batch(texts)``), and ``encoder="lab"`` keeps the Python encoder for learning.

A compiled encoder is used only where it reproduces the lab's ids exactly; where it cannot, it is
refused with the reason (:func:`tiktoken_problem`, :func:`hf_problem`):

- tiktoken knows no merge list: it merges the adjacent pair whose *concatenation* has the lowest
  rank, and the rank is the token's id. That is the lab's rule only when merged ids grow in merge
  order, every multi-byte token is made by a merge, and each token's own bytes, merged by
  tiktoken's rule, end in exactly the pair that made it (what tiktoken's ranks imply).
- Both need every token's bytes to be distinct (tiktoken maps bytes → id, HF spells → id) and HF
  needs no special token spelled like an ordinary token; tiktoken matches special tokens in an
  unspecified order, so one may not be the prefix of another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llm_lab.errors import ArgumentError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from llm_lab.tokenizers.formats import hf_tokenizer_json, tiktoken_ranks, token_to_str
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.pretokenize import GPT2_PATTERN

ENCODERS = ("auto", "tiktoken", "hf", "lab")


def _duplicate_bytes(tok: BPETokenizer) -> str | None:
    special_ids = set(tok.special_tokens.values())
    ordinary = [b for i, b in tok.vocab.items() if i not in special_ids]
    if len(set(ordinary)) < len(ordinary):
        twice = next(b for b in ordinary if ordinary.count(b) > 1)
        return f"the byte string {twice!r} is two tokens"
    return None


def tiktoken_problem(tok: BPETokenizer) -> str | None:
    """Why tiktoken cannot reproduce ``tok``'s ids, or ``None`` when it can (see module doc)."""
    problem = _duplicate_bytes(tok)
    if problem:
        return problem
    names = sorted(tok.special_tokens)
    for name in names:
        longer = next((other for other in names if other != name and other.startswith(name)), None)
        if longer:
            return f"special token {name!r} begins {longer!r}, and tiktoken may match either"
    ranks = tiktoken_ranks(tok.vocab, set(tok.special_tokens.values()))  # bytes → id
    merged = [ranks[a + b] for a, b in tok.merges]
    for rank in range(1, len(merged)):
        if merged[rank] <= merged[rank - 1]:
            return (
                f"merge {rank} makes id {merged[rank]}, not larger than merge {rank - 1}'s {merged[rank - 1]}"
            )
    unmade = sorted(set(ranks.values()) - set(merged) - {ranks[bytes([b])] for b in range(256)})
    if unmade:
        return f"token {unmade[0]} ({tok.vocab[unmade[0]]!r}) is made by no merge"
    for rank, (a, b) in enumerate(tok.merges):
        if _tiktoken_parts(a + b, ranks, limit=ranks[a + b]) != [a, b]:
            return f"merge {rank} ({a!r}, {b!r}) is not the pair tiktoken's ranks imply"
    return None


def _tiktoken_parts(piece: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """``piece`` merged by tiktoken's rule (the leftmost adjacent pair whose concatenation has the
    lowest rank), using only tokens ranked below ``limit``; the rank list of ``bpe_fast.py``."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    joined = [ranks.get(x + y, limit) for x, y in zip(parts, parts[1:], strict=False)]
    while joined and (best := min(joined)) < limit:
        i = joined.index(best)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del joined[i]
        if i > 0:
            joined[i - 1] = ranks.get(parts[i - 1] + parts[i], limit)
        if i < len(joined):
            joined[i] = ranks.get(parts[i] + parts[i + 1], limit)
    return parts


def hf_problem(tok: BPETokenizer) -> str | None:
    """Why HF ``tokenizers`` cannot reproduce ``tok``'s ids, or ``None`` when it can."""
    problem = _duplicate_bytes(tok)
    if problem:
        return problem
    special_ids = set(tok.special_tokens.values())
    spellings = {token_to_str(b) for i, b in tok.vocab.items() if i not in special_ids}
    clash = sorted(set(tok.special_tokens) & spellings)
    if clash:
        return f"special token {clash[0]!r} is spelled like an ordinary token"
    return None


def tiktoken_encoding(tok: BPETokenizer, checked: bool = False) -> Any:
    """A ``tiktoken.Encoding`` with ``tok``'s ranks, the GPT-2 pattern and its special tokens
    (``checked=True``: :func:`tiktoken_problem` was already asked, and said none)."""
    import tiktoken  # optional: only this hand-over needs it

    problem = None if checked else tiktoken_problem(tok)
    if problem:
        raise ArgumentError(
            "encoder", f"tiktoken cannot reproduce this tokenizer: {problem}", "use 'hf' or 'lab'"
        )
    ranks = tiktoken_ranks(tok.vocab, set(tok.special_tokens.values()))
    return tiktoken.Encoding(
        "llm_lab_bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=tok.special_tokens
    )


def hf_tokenizer(tok: BPETokenizer, checked: bool = False) -> Any:
    """A ``tokenizers.Tokenizer`` read from the ``tokenizer.json`` that ``tok`` writes."""
    from tokenizers import Tokenizer as HFLibTokenizer

    problem = None if checked else hf_problem(tok)
    if problem:
        raise ArgumentError(
            "encoder", f"HF tokenizers cannot reproduce this tokenizer: {problem}", "use 'lab'"
        )
    return HFLibTokenizer.from_str(hf_tokenizer_json(tok.vocab, tok.merges, tok.special_tokens))


def choose_encoder(tokenizer: Tokenizer, encoder: str = "auto") -> str:
    """The encoder that will encode for ``tokenizer``: ``encoder`` itself when it can reproduce
    the tokenizer's ids, else an :class:`ArgumentError` saying why. ``"auto"`` takes the fastest
    that can, on one thread: tiktoken; else the tokenizer's own ``encode`` if it is the fast
    Python one (about 3× HF's speed on one thread, see ``bench/bench_bpe.py``); else HF; else
    the tokenizer's own ``encode``."""
    if encoder not in ENCODERS:
        raise ArgumentError("encoder", f"unknown encoder {encoder!r}", f"use one of {ENCODERS}")
    if encoder == "lab":
        return encoder
    if isinstance(tokenizer, HFTokenizer):  # already compiled: its own encode is HF's
        if encoder == "tiktoken":
            raise ArgumentError("encoder", "an HFTokenizer encodes with HF tokenizers", "use 'hf' or 'auto'")
        return "hf"
    if not isinstance(tokenizer, BPETokenizer):
        if encoder == "auto":
            return "lab"
        raise ArgumentError(
            "encoder", f"{encoder} reproduces byte-level BPE, not {type(tokenizer).__name__}", "use 'lab'"
        )
    if encoder == "auto" and isinstance(tokenizer, FastBPETokenizer):
        return "tiktoken" if _problem(tokenizer, "tiktoken") is None else "lab"
    candidates = ("tiktoken", "hf") if encoder == "auto" else (encoder,)
    for name in candidates:  # asked lazily: checking costs about a second for 50k merges
        problem = _problem(tokenizer, name)
        if problem is None:
            return name
    if encoder == "auto":
        return "lab"
    able = [
        repr(name) for name in ("tiktoken", "hf") if name != encoder and _problem(tokenizer, name) is None
    ]
    raise ArgumentError(
        "encoder",
        f"{encoder} cannot reproduce this tokenizer: {problem}",
        f"use {' or '.join([*able, repr('lab')])}",
    )


def _problem(tok: BPETokenizer, encoder: str) -> str | None:
    if encoder == "hf":
        return hf_problem(tok)
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return "tiktoken is not installed (pip install tiktoken)"
    return tiktoken_problem(tok)


class BatchEncoder:
    """Encodes many texts with ``tokenizer``'s ids, by the encoder :func:`choose_encoder` picks.

    One thread per process: the data pipeline runs one of these in each worker process. It pickles
    without its compiled encoder, which each process builds again on first use.
    """

    def __init__(self, tokenizer: Tokenizer, encoder: str = "auto") -> None:
        self.tokenizer = tokenizer
        self.name = choose_encoder(tokenizer, encoder)
        self._compiled: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled": None}

    def _engine(self) -> Any:
        if self._compiled is None:
            tok = self.tokenizer
            if isinstance(tok, HFTokenizer):
                self._compiled = tok.tokenizer if self.name == "hf" else tok
            elif isinstance(tok, BPETokenizer) and self.name == "tiktoken":
                self._compiled = tiktoken_encoding(tok, checked=True)
            elif isinstance(tok, BPETokenizer) and self.name == "hf":
                self._compiled = hf_tokenizer(tok, checked=True)
            else:
                self._compiled = tok
        return self._compiled

    def encode(self, text: str) -> list[int]:
        engine = self._engine()
        if self.name == "tiktoken":
            return engine.encode(text, allowed_special="all")
        if self.name == "hf":
            return engine.encode(text, add_special_tokens=False).ids
        return engine.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text, as ``tokenizer.encode`` gives them."""
        return [self.encode(text) for text in texts]

    def encode_documents(self, texts: Sequence[str], eot_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the texts in one ``uint32`` array with ``eot_id`` after each text, and the
        number of ids of each text (its end-of-text included)."""
        if self.name == "tiktoken":  # straight into numpy, never through Python ints
            engine = self._engine()
            arrays = [engine.encode_to_numpy(text, allowed_special="all") for text in texts]
        else:
            arrays = [np.array(self.encode(text), dtype=np.uint32) for text in texts]
        eot = np.array([eot_id], dtype=np.uint32)
        ids = np.concatenate([part for array in arrays for part in (array, eot)] or [eot[:0]])
        return ids, np.array([len(array) + 1 for array in arrays], dtype=np.int64)

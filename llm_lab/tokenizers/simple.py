"""The simplest tokenizer: regex words, a vocabulary, and token ↔ id ↔ vector (Raschka, ch. 2.2–2.4).

Text → tokens with a regular expression, tokens → ids with a vocabulary built from the corpus,
ids → vectors by a one-hot row or, equivalently, an embedding lookup (ch. 2.7). The same word
splitting and vocabulary serve the word-level stages (CBoW, word language models).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import regex as re

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.base import read_json

if TYPE_CHECKING:
    import torch

UNK = "<|unk|>"
ENDOFTEXT = "<|endoftext|>"

# A word is a run of letters/digits, optionally with an inner apostrophe ("don't"); any other
# non-space character is a token of its own, so punctuation survives (Raschka ch. 2.2).
_WORD = r"\w+(?:['’]\w+)*"
_TOKEN = re.compile(rf"{_WORD}|[^\w\s]")
_WORD_ONLY = re.compile(_WORD)
# decode() rejoins tokens with spaces; no space belongs before closing punctuation.
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.:;?!)\]}'\"])")


def split_words(text: str, lowercase: bool = False, keep_punctuation: bool = True) -> list[str]:
    """Split ``text`` into word (and, unless ``keep_punctuation=False``, punctuation) tokens."""
    if lowercase:
        text = text.lower()
    pattern = _TOKEN if keep_punctuation else _WORD_ONLY
    return pattern.findall(text)


class Vocabulary:
    """A bijection token ↔ id, most frequent token first, with the corpus counts kept alongside.

    Ids follow frequency rank (ties broken alphabetically, so builds are reproducible); special
    tokens come last with a count of 0.
    """

    def __init__(self, tokens: Sequence[str], counts: Sequence[int] | None = None) -> None:
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("a vocabulary may not list a token twice")
        self.counts: list[int] = list(counts) if counts is not None else [0] * len(self.itos)

    @classmethod
    def from_tokens(
        cls,
        tokens: Iterable[str],
        min_count: int = 1,
        max_vocab_size: int | None = None,
        specials: Sequence[str] = (),
    ) -> Vocabulary:
        """Count ``tokens`` and keep those seen at least ``min_count`` times (at most ``max_vocab_size``)."""
        if min_count < 1:
            raise ArgumentError("min_count", f"{min_count} < 1", "use 1 or more")
        if max_vocab_size is not None and max_vocab_size <= len(specials):
            raise ArgumentError(
                "max_vocab_size", f"{max_vocab_size} leaves no room for words", "raise it or use None"
            )
        counter = Counter(tokens)
        for s in specials:
            counter.pop(s, None)
        kept = sorted(((t, c) for t, c in counter.items() if c >= min_count), key=lambda tc: (-tc[1], tc[0]))
        if max_vocab_size is not None:
            kept = kept[: max_vocab_size - len(specials)]
        if not kept:
            top = max(counter.values(), default=0)
            raise ArgumentError(
                "min_count",
                f"min_count={min_count} leaves the vocabulary empty "
                f"({len(counter)} distinct tokens, the most frequent seen {top} times)",
                "lower min_count or give a larger corpus",
            )
        words = [t for t, _ in kept] + list(specials)
        counts = [c for _, c in kept] + [0] * len(specials)
        return cls(words, counts)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi


class SimpleTokenizer:
    """Word-level tokenizer over a :class:`Vocabulary` (Raschka ch. 2.3 "V1" and ch. 2.4 "V2").

    ``strict=True`` is V1: an unknown word is an error that names it. ``strict=False`` is V2: unknown
    words become ``<|unk|>`` and :meth:`encode_documents` puts ``<|endoftext|>`` between documents.
    ``lowercase`` folds case before splitting; ``punctuation=False`` drops punctuation tokens and
    keeps words only (what the CBoW stage learns vectors for).
    """

    KIND = "llm_lab.SimpleTokenizer"  # the ``kind`` field of the file that ``save`` writes
    VERSION = 1

    def __init__(
        self, vocab: Vocabulary, strict: bool = False, lowercase: bool = False, punctuation: bool = True
    ) -> None:
        if not strict and (UNK not in vocab or ENDOFTEXT not in vocab):
            raise ArgumentError(
                "strict",
                f"a non-strict tokenizer needs {UNK} and {ENDOFTEXT} in the vocabulary",
                "build it with SimpleTokenizer.from_corpus or strict=True",
            )
        self.vocab = vocab
        self.strict = strict
        self.lowercase = lowercase
        self.punctuation = punctuation

    @classmethod
    def from_corpus(
        cls,
        docs: Iterable[str],
        strict: bool = False,
        lowercase: bool = False,
        punctuation: bool = True,
        min_count: int = 1,
        max_vocab_size: int | None = None,
    ) -> SimpleTokenizer:
        """Build the vocabulary from ``docs``: the words seen ``min_count`` times, most frequent first."""
        tokens = (t for d in docs for t in split_words(d, lowercase, punctuation))
        specials = () if strict else (UNK, ENDOFTEXT)
        return cls(
            Vocabulary.from_tokens(tokens, min_count, max_vocab_size, specials),
            strict,
            lowercase,
            punctuation,
        )

    def tokenize(self, text: str) -> list[str]:
        """The words of ``text`` (and punctuation, unless ``punctuation=False``), as encoding splits them."""
        return split_words(text, self.lowercase, self.punctuation)

    def encode(self, text: str) -> list[int]:
        stoi = self.vocab.stoi
        ids = []
        for token in self.tokenize(text):
            if token in stoi:
                ids.append(stoi[token])
            elif self.strict:
                raise DataError(
                    f"unknown word {token!r}: it is not in the vocabulary "
                    "(use strict=False to map it to <|unk|>)"
                )
            else:
                ids.append(stoi[UNK])
        return ids

    def encode_documents(self, docs: Iterable[str]) -> list[int]:
        """Encode documents into one id stream with ``<|endoftext|>`` after each (V2 only)."""
        if self.strict:
            raise ArgumentError("strict", "V1 has no <|endoftext|>", "use strict=False")
        eot = self.vocab.stoi[ENDOFTEXT]
        ids: list[int] = []
        for doc in docs:
            ids.extend(self.encode(doc))
            ids.append(eot)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The tokens of ``ids`` joined by spaces, with no space before closing punctuation."""
        return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(map(self.id_to_token, ids)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.stoi.get(token)

    def id_to_token(self, i: int) -> str:
        if not 0 <= i < len(self.vocab):
            raise DataError(f"id {i} is out of range for a vocabulary of {len(self.vocab)}")
        return self.vocab.itos[i]

    # ---------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the vocabulary (tokens in id order, with their corpus counts) and the settings as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "kind": self.KIND,
            "version": self.VERSION,
            "strict": self.strict,
            "lowercase": self.lowercase,
            "punctuation": self.punctuation,
            "tokens": self.vocab.itos,
            "counts": self.vocab.counts,
        }
        path.write_text(json.dumps(document, ensure_ascii=False, indent=0), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SimpleTokenizer:
        """Read what :meth:`save` wrote; any other file is a :class:`DataError` naming it."""
        document = read_json(path, "a SimpleTokenizer file")
        if not isinstance(document, dict) or document.get("kind") != cls.KIND:
            raise DataError(f'{path}: not a SimpleTokenizer file (no "kind": "{cls.KIND}")')
        if document.get("version") != cls.VERSION:
            raise DataError(f"{path}: SimpleTokenizer file version {document.get('version')!r} is not 1")
        tokens, counts = document.get("tokens"), document.get("counts")
        strict, lowercase, punctuation = (document.get(k) for k in ("strict", "lowercase", "punctuation"))
        if (
            not isinstance(tokens, list)
            or not all(isinstance(t, str) for t in tokens)
            or not isinstance(counts, list)
            or len(counts) != len(tokens)
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts)
            or not (
                isinstance(strict, bool) and isinstance(lowercase, bool) and isinstance(punctuation, bool)
            )
        ):
            raise DataError(f"{path}: a SimpleTokenizer file needs tokens, counts and boolean settings")
        try:
            return cls(Vocabulary(tokens, counts), strict, lowercase, punctuation)
        except (ArgumentError, DataError) as e:
            raise DataError(f"{path}: {e}") from None


def one_hot(ids: Sequence[int] | torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Ids → one-hot rows (float). ``one_hot(ids, V) @ W`` equals the embedding lookup ``W[ids]``."""
    import torch  # here, not at the top: tokenizing text should not pay for loading torch

    ids = torch.as_tensor(ids, dtype=torch.long)
    out = torch.zeros(*ids.shape, vocab_size)
    out.scatter_(-1, ids.unsqueeze(-1), 1.0)
    return out

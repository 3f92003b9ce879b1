"""The one tokenizer interface every stage relies on, and what is built on it alone.

Raschka ch. 2 meets three tokenizers — regex words (ch. 2.2–2.4), byte-level BPE (ch. 2.5) and a
library one — and the rest of the lab must not care which one it holds: the data encodes text,
the model needs ``vocab_size``, the callbacks decode samples, the run directory keeps a file that
loads the tokenizer back. :class:`Tokenizer` writes that contract down once (a structural
``Protocol``: a class satisfies it by having these members, with no base class to inherit).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llm_lab.errors import DataError


@runtime_checkable
class Tokenizer(Protocol):
    """Text ↔ ids, with a vocabulary of ``vocab_size`` ids and a file format of its own.

    ``id_to_token`` is the printable form of one token (a word; for byte-level BPE the GPT-2
    spelling of its bytes, ``"Ġthe"``); ``token_to_id`` inverts it and answers ``None`` for a
    token the vocabulary lacks. ``load(path)`` reads what ``save(path)`` wrote and raises
    :class:`~llm_lab.errors.DataError` naming the file when it cannot.
    """

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    def token_to_id(self, token: str) -> int | None: ...

    def id_to_token(self, i: int) -> str: ...

    def save(self, path: str | Path) -> Path: ...

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer: ...


def read_json(path: str | Path, what: str) -> Any:
    """The JSON document in ``path``; a missing, binary, truncated or corrupt file is a
    :class:`DataError` that names the file and says what was expected there (``what``)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {what})") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder (expected {what})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected {what})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: corrupt or truncated JSON at line {e.lineno} (expected {what})") from None


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """A fingerprint of everything that decides a tokenizer's ids: the SHA-256 of the file it saves.

    It is the same in every process and every run (the cache of prepared ids is keyed by it), and a
    tokenizer loaded from a file has the hash of the one that wrote it."""
    with tempfile.TemporaryDirectory() as tmp:
        data = tokenizer.save(Path(tmp) / "tokenizer.json").read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]

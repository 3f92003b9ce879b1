"""A Hugging Face ``tokenizers`` tokenizer behind the lab's tokenizer interface (``base.Tokenizer``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer

from llm_lab.errors import DataError


class HFTokenizer:
    """Wraps ``tokenizers.Tokenizer``: the lab's interface over any ``tokenizer.json``.

    ``name_or_path`` is a ``tokenizer.json`` file, or a hub name (e.g. ``gpt2``; needs the internet).
    Special tokens in the text are always matched (HF's added tokens), as in the lab's BPE.
    """

    def __init__(self, name_or_path: str | Path) -> None:
        path = Path(name_or_path)
        if path.is_dir():
            inside = f"; {path / 'tokenizer.json'} is in it" if (path / "tokenizer.json").is_file() else ""
            raise DataError(f"{name_or_path}: is a folder, not a tokenizer.json file{inside}")
        if not path.exists() and (path.suffix == ".json" or str(name_or_path).startswith(("/", ".", "~"))):
            raise DataError(f"{name_or_path}: no such file")
        try:
            if path.is_file():
                self.tokenizer = Tokenizer.from_file(str(path))
            else:
                self.tokenizer = Tokenizer.from_pretrained(str(name_or_path))
        except Exception as e:  # tokenizers raises a bare Exception for every kind of bad input
            what = "a Hugging Face tokenizer.json" if path.is_file() else "a hub tokenizer name or a file"
            raise DataError(f"{name_or_path}: cannot be read as {what} ({e})") from None

    @classmethod
    def load(cls, path: str | Path) -> HFTokenizer:
        """Read a ``tokenizer.json`` file (never a hub name)."""
        if not Path(path).is_file():
            raise DataError(f"{path}: file not found (expected a Hugging Face tokenizer.json)")
        return cls(path)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, encoded by the library in parallel threads."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, i: int) -> str:
        token = self.tokenizer.id_to_token(i)
        if token is None:
            raise DataError(f"id {i} is out of range for a vocabulary of {self.vocab_size}")
        return token

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        return path

"""A Hugging Face ``tokenizers`` tokenizer behind the lab's small tokenizer interface."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer


class HFTokenizer:
    """Wraps ``tokenizers.Tokenizer``: ``encode(text) -> list[int]``, ``decode(ids)``, ``vocab_size``.

    ``name_or_path`` is a ``tokenizer.json`` file, or a hub name (e.g. ``gpt2``; needs the internet).
    """

    def __init__(self, name_or_path: str | Path) -> None:
        path = Path(name_or_path)
        if path.is_file():
            self.tokenizer = Tokenizer.from_file(str(path))
        else:
            self.tokenizer = Tokenizer.from_pretrained(str(name_or_path))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

"""Task files: JSON Lines (one JSON object a line), read with errors that name the file and the row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_lab.data import jsonl
from llm_lab.errors import DataError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` task file (see :func:`llm_lab.data.jsonl.read_jsonl`)."""
    return jsonl.read_jsonl(path, "a .jsonl task file or a built-in task name")


def field(row: dict[str, Any], path: Path, name: str, kind: type, example: str) -> Any:
    """``row[name]``, checked to be a ``kind``; a DataError naming the file, row and fix if not."""
    where = f"{path}, row {row['_row']}"
    if name not in row:
        present = ", ".join(k for k in row if k != "_row") or "none"
        raise DataError(f"{where}: missing field {name!r} (fields present: {present}; add e.g. {example})")
    value = row[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{where}: {name} must be {kind.__name__}, got {value!r} (e.g. {example})")
    return value

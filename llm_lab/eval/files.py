"""Task files: JSON Lines (one JSON object a line), read with errors that name the file and the row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_lab.data.corpus import read_text
from llm_lab.errors import DataError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` file (blank lines skipped); rows are numbered from 1, as an editor
    shows lines. A row that is not a JSON object, or a file without rows, is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give a .jsonl task file or a built-in task name)")
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}, row {number}: not valid JSON ({err.msg}); write one object per line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, row {number}: a JSON {type(row).__name__}, not an object (write {{...}})"
            )
        rows.append({"_row": number, **row})
    if not rows:
        raise DataError(f"{path}: the task is empty (write one JSON object a line)")
    return rows


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

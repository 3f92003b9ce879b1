"""JSON Lines files (one JSON object a line), read with errors that name the file and the row: the
one reader of every ``.jsonl`` the lab takes (tasks, labelled texts, instruction and preference rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_lab.data.corpus import read_text
from llm_lab.errors import DataError


def read_jsonl(path: str | Path, what: str = "a .jsonl file") -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` file, each with its number under ``"_row"`` (from 1, as an editor
    shows lines; blank lines skipped). A missing file (``what`` says what to give instead), a row
    that is not a JSON object, or a file without rows is a DataError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file (give {what})")
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
        raise DataError(f"{path}: the file is empty (write one JSON object a line)")
    return rows

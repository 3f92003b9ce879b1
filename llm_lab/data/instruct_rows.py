"""Instruction rows: the files and datasets instruction tuning reads, as :class:`Example` conversations.

- a JSON or JSON Lines file of Alpaca rows (``instruction``, optional ``input``, ``output``; the
  book's ``instruction-data.json`` as downloaded, Raschka ch. 7.2) or of chat rows (``messages``: a
  list of ``{"role", "content"}``, multi-turn), one format per file;
- a Hugging Face dataset (a hub name or a folder ``save_to_disk`` wrote), its ``columns`` mapped
  onto ``instruction``/``input``/``output`` or ``messages``.

A row that cannot be used is a :class:`~llm_lab.errors.DataError` naming the file, the row, the key
and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_lab.data.corpus import read_text
from llm_lab.data.hub import load_split
from llm_lab.data.jsonl import read_jsonl
from llm_lab.data.templates import JinjaTemplate, Message, Template, check_messages
from llm_lab.errors import ArgumentError, DataError

ALPACA_KEYS = ("instruction", "output")


@dataclass(frozen=True)
class Example:
    """One conversation to learn from: an Alpaca row (``instruction``, ``input``, ``output``) or
    chat ``messages``; ``where`` names its file and row, ``group`` what the built-in split follows."""

    where: str
    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: tuple[Message, ...] = ()
    group: str = ""

    def conversation(self, template: Template | JinjaTemplate) -> list[Message]:
        """The messages the template renders: an Alpaca row becomes a user turn and an answer."""
        if self.messages:
            return list(self.messages)
        answer = {"role": "assistant", "content": self.output}
        return [*template.alpaca_messages(self.instruction, self.input), answer]

    def prompt_and_reference(self, template: Template | JinjaTemplate) -> tuple[list[Message], str]:
        """The conversation up to its last answer, and that answer (what a test compares with)."""
        messages = self.conversation(template)
        return messages[:-1], messages[-1]["content"]


def row_example(row: Any, where: str, first_format: str | None) -> tuple[Example, str]:
    """A row as an :class:`Example` and its format (``alpaca`` or ``chat``); ``first_format`` is
    that of the file's first row, since one file holds one format."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON {type(row).__name__}, not an object (write {{...}})")
    kind = "chat" if "messages" in row else "alpaca" if "instruction" in row else None
    if kind is None:
        present = ", ".join(map(str, row)) or "none"
        raise DataError(
            f"{where}: neither key 'instruction' (an Alpaca row) nor 'messages' (a chat row); keys "
            f"present: {present}"
        )
    if first_format is not None and kind != first_format:
        key = "messages" if kind == "chat" else "instruction"
        raise DataError(
            f"{where}: key {key!r} makes this a {kind} row, but the first row is an {first_format} "
            f"row (one format per file: put the {kind} rows in a file of their own)"
        )
    if kind == "chat":
        messages = row["messages"]
        try:
            check_messages(messages if isinstance(messages, list) else [None])  # type: ignore[list-item]
        except ArgumentError as err:
            raise DataError(f"{where}: key 'messages': {err.problem} ({err.fix})") from None
        if not messages or messages[-1]["role"] != "assistant":
            raise DataError(
                f"{where}: key 'messages' must end with an assistant message (the response to learn)"
            )
        plain = tuple({"role": m["role"], "content": m["content"]} for m in messages)
        return Example(where, messages=plain), kind
    for key in (*ALPACA_KEYS, "input"):
        if key == "input" and key not in row:
            continue
        if key not in row:
            raise DataError(f"{where}: key {key!r} is missing (an Alpaca row needs instruction and output)")
        if not isinstance(row[key], str):
            raise DataError(f"{where}: key {key!r} must be text, got {row[key]!r}")
    if not row["output"].strip():
        raise DataError(f"{where}: key 'output' is empty (write the response to learn, or drop the row)")
    return Example(where, row["instruction"], row.get("input", ""), row["output"]), kind


def read_examples(path: str | Path) -> list[Example]:
    """The examples of a ``.json`` file (one list of rows) or ``.jsonl`` file (a row a line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file (give a .json or .jsonl file of Alpaca or chat rows)")
    if path.suffix == ".jsonl":
        rows = [(f"{path}, row {row.pop('_row')}", row) for row in read_jsonl(path)]
    else:
        text = read_text(path)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON at line {err.lineno} ({err.msg})") from None
        if not isinstance(document, list):
            raise DataError(
                f"{path}: a JSON {type(document).__name__}, not a list of rows (use [{{...}}, ...])"
            )
        rows = [(f"{path}, row {n}", row) for n, row in enumerate(document, start=1)]
    return examples_of(rows, str(path))


def examples_of(rows: Sequence[tuple[str, Any]], source: str) -> list[Example]:
    """Rows ``(where, row)`` of one source as examples, all of one format."""
    examples: list[Example] = []
    first: str | None = None
    for where, row in rows:
        example, kind = row_example(row, where, first)
        first = first or kind
        examples.append(example)
    if not examples:
        raise DataError(f"{source}: no rows (write Alpaca or chat rows)")
    return examples


def read_hf_examples(name: str, split: str = "train", columns: dict[str, str] | None = None) -> list[Example]:
    """The examples of a Hugging Face dataset, ``columns`` naming its column for each of our keys
    (``{"instruction": "prompt", "output": "completion"}``; unmapped keys keep their names)."""
    table = load_split(name, split)
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - {"instruction", "input", "output", "messages"})
    if unknown:
        raise ArgumentError(
            "columns", f"{unknown} are not instruction, input, output or messages", "map only those"
        )
    theirs = {mapping.get(k, k): k for k in ("instruction", "input", "output", "messages")}
    rows = [
        (f"{name}, row {i}", {theirs[c]: v for c, v in row.items() if c in theirs})
        for i, row in enumerate(table)
    ]
    return examples_of(rows, name)

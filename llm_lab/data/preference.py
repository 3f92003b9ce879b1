"""Preference pairs for DPO: a prompt, the response preferred (``chosen``) and the other (``rejected``).

Three sources, one shape (:class:`Pair`):

- a JSON Lines file, one pair a line, in one of two forms for the whole file — strings
  (``{"prompt": "...", "chosen": "...", "rejected": "..."}``) or chat messages, as TRL and the hub's
  preference sets write them (``"prompt": [{"role": "user", "content": "..."}]``, ``"chosen":
  [{"role": "assistant", "content": "..."}]``);
- a Hugging Face dataset (a hub name, or a folder ``datasets`` saved), its columns mapped;
- built in, offline: the installed standard library's docstrings (:func:`builtin_pairs`).

Each side of a pair is encoded as one conversation by the run's chat template, and only the
response's tokens are scored (their mask), as in instruction tuning.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_lab.data.hub import load_split
from llm_lab.data.jsonl import read_jsonl
from llm_lab.data.stdlib_pairs import stdlib_pairs
from llm_lab.errors import DataError

Message = dict[str, str]
KEYS = ("prompt", "chosen", "rejected")
EXAMPLE = '{"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."}'


@dataclass(frozen=True)
class Pair:
    """One preference: the conversation so far (``prompt``, ending with the user's turn) and the
    assistant's two answers. ``where`` names the file and row (or module) it came from; ``group``
    is the unit a training/validation split keeps whole (a row of a file, a module of the built-in
    pairs)."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    where: str
    group: str


def _form(value: Any) -> str | None:
    """``"string"`` or ``"messages"`` (a list of {role, content}); None for anything else."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        return "messages"
    return None


def _answer(value: Any, where: str, key: str) -> str:
    """A response as text: the string itself, or the one assistant message of a list."""
    if isinstance(value, str):
        return value
    if len(value) != 1 or value[0]["role"] != "assistant":
        raise DataError(
            f'{where}: {key!r} must be one assistant message (write [{{"role": "assistant", '
            '"content": "..."}])'
        )
    return str(value[0]["content"])


def pairs_from_rows(rows: Iterable[dict[str, Any]], source: str) -> list[Pair]:
    """Checked pairs from raw rows (each with its ``_row`` number); a DataError naming the source,
    row, key and fix for a missing key, a value of neither form, a pair whose two responses are the
    same, or a row whose form differs from the first row's."""
    pairs: list[Pair] = []
    first: tuple[str, int] | None = None  # the file's form, and the row that set it
    for row in rows:
        where = f"{source}, row {row['_row']}"
        for key in KEYS:
            if key not in row:
                present = ", ".join(k for k in row if k != "_row") or "none"
                raise DataError(f"{where}: no {key!r} key (keys present: {present}; write e.g. {EXAMPLE})")
        forms = {key: _form(row[key]) for key in KEYS}
        for key, form in forms.items():
            if form is None:
                raise DataError(
                    f"{where}: {key!r} is neither text nor a list of {{role, content}} messages "
                    f"(got {type(row[key]).__name__}; write e.g. {EXAMPLE})"
                )
        if len(set(forms.values())) > 1 or (first is not None and forms["prompt"] != first[0]):
            form, at = first if first is not None else (forms["prompt"], row["_row"])
            raise DataError(
                f"{where}: mixed formats: this row's {', '.join(f'{k} is {v}' for k, v in forms.items())}, "
                f"and row {at}'s prompt is {form} (one file holds one format: convert it to all strings "
                "or all chat messages)"
            )
        first = first or (str(forms["prompt"]), int(row["_row"]))
        prompt = row["prompt"]
        messages = ({"role": "user", "content": prompt},) if isinstance(prompt, str) else tuple(prompt)
        chosen, rejected = (_answer(row[k], where, k) for k in ("chosen", "rejected"))
        if chosen.strip() == rejected.strip():
            raise DataError(
                f"{where}: 'chosen' = 'rejected' ({chosen[:40]!r}...): a pair teaches nothing when both "
                "answers are the same (fix the rejected answer, or drop the row)"
            )
        pairs.append(Pair(messages, chosen, rejected, where, where))
    if not pairs:
        raise DataError(f"{source}: no pairs in it (write one JSON object a line, e.g. {EXAMPLE})")
    return pairs


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs of a ``.jsonl`` file (see the module's docstring)."""
    return pairs_from_rows(read_jsonl(path), str(path))


def hub_pairs(name: str, split: str = "train", columns: dict[str, str] | None = None) -> list[Pair]:
    """The pairs of a Hugging Face dataset, a folder ``datasets`` saved or a hub name; ``columns``
    maps ``prompt``, ``chosen`` and ``rejected`` to its own column names."""
    mapping = {key: key for key in KEYS} | dict(columns or {})
    rows = load_split(name, split)
    missing = [key for key in KEYS if mapping[key] not in rows.column_names]
    if missing:
        raise DataError(
            f"{name}: no column {', '.join(repr(mapping[k]) for k in missing)} for {', '.join(missing)} "
            f"(its columns: {', '.join(rows.column_names)}; name yours with columns={{prompt: ..., "
            "chosen: ..., rejected: ...}})"
        )
    renamed = ({"_row": i, **{key: row[mapping[key]] for key in KEYS}} for i, row in enumerate(rows))
    return pairs_from_rows(renamed, name)


def builtin_pairs(seed: int = 0) -> list[Pair]:
    """The instruction set's "What does ``asyncio.tasks.all_tasks`` do?" questions
    (``llm_lab.data.stdlib_pairs``, the same modules, none held out for evaluation) as pairs —
    chosen: the first sentence of its docstring, the instruct stage's answer; rejected: the first
    sentence of another object of the same package, drawn with ``seed`` (same style and vocabulary,
    so only knowing the function tells them apart). ``group`` is the module, whose split
    (:func:`~llm_lab.data.stdlib_pairs.module_split`) is the instruct stage's."""
    questions = [p for p in stdlib_pairs() if p.instruction.startswith("What does `")]
    by_package: dict[str, list[str]] = {}
    for question in questions:
        by_package.setdefault(question.module.split(".")[0], []).append(question.output)
    rng = random.Random(seed)
    pairs = []
    for question in questions:
        others = sorted(set(by_package[question.module.split(".")[0]]) - {question.output})
        if others:
            prompt = ({"role": "user", "content": question.instruction},)
            pairs.append(Pair(prompt, question.output, rng.choice(others), question.module, question.module))
    return pairs

"""Labelled texts from a user's file: CSV, TSV (with or without a header row), JSON Lines, or a
Hugging Face dataset (a hub name, or a folder ``datasets`` saved), each read into (text, label) rows
with errors that name the file, the row and the fix.

A file without a header row (the UCI SMS Spam Collection as downloaded: ``ham<TAB>Go until
jurong...``) has its columns asked for by position, ``0``, ``1``, ...: ``text_column=1 label_column=0``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from llm_lab.data.corpus import read_text
from llm_lab.data.hub import load_split
from llm_lab.data.jsonl import read_jsonl
from llm_lab.errors import ArgumentError, DataError

Rows = list[tuple[str, str]]  # (text, label); the label is "" when read without one


def _columns_error(
    path: str | Path, column: str | int, arg: str, columns: list[str], numbered: bool
) -> ArgumentError:
    listed = ", ".join(columns)
    if numbered:
        fix = f"the file's {len(columns)} columns are numbered from 0"
    else:
        fix = f"its columns are {listed}; a file without a header row numbers them: text_column=1"
    return ArgumentError(arg, f"{path} has no column {column!r}", fix)


def _table(path: Path, delimiter: str, text_column: str | int, label_column: str | int | None) -> Rows:
    """The rows of a CSV or TSV file. The first row is its header, unless both columns are asked
    for by number (``text_column=1 label_column=0``): a file without a header row."""
    reader = csv.reader(
        io.StringIO(read_text(path)),
        delimiter=delimiter,
        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,  # a TSV's quotes are text
    )
    table = [row for row in reader if row]
    if not table:
        raise DataError(f"{path}: the file is empty")
    asked = [
        (arg, c) for arg, c in (("text_column", text_column), ("label_column", label_column)) if c is not None
    ]
    numbered = all(str(column).isdigit() for _, column in asked)
    if numbered:
        names, body, first = [str(i) for i in range(len(table[0]))], table, 1
    else:
        names, body, first = table[0], table[1:], 2
    for arg, column in asked:
        if str(column) not in names:
            raise _columns_error(path, column, arg, names, numbered)
    t = names.index(str(text_column))
    lab = names.index(str(label_column)) if label_column is not None else t
    rows = []
    for number, row in enumerate(body, start=first):
        if len(row) <= max(t, lab):
            raise DataError(
                f"{path}, row {number}: {len(row)} columns, {len(names)} expected (a stray delimiter?)"
            )
        rows.append(_row(path, number, row[t], row[lab] if label_column is not None else _UNLABELLED))
    return rows


_UNLABELLED = object()


def _row(path: str | Path, number: int, text: object, label: object = "") -> tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}, row {number}: the text is empty (remove the row or give it text)")
    if label is _UNLABELLED:
        return text, ""
    if label is None or str(label).strip() == "":
        raise DataError(f"{path}, row {number}: the label is empty (remove the row or label it)")
    return text, str(label).strip()


def _jsonl(path: Path, text_column: str | int, label_column: str | int | None) -> Rows:
    rows = []
    for record in read_jsonl(path):
        number = record.pop("_row")
        for arg, column in (("text_column", text_column), ("label_column", label_column)):
            if column is not None and str(column) not in record:
                raise _columns_error(path, column, arg, list(record), False)
        label = record[str(label_column)] if label_column is not None else _UNLABELLED
        rows.append(_row(path, number, record[str(text_column)], label))
    return rows


def _hf(source: str, split: str, text_column: str | int, label_column: str | int) -> Rows:
    """A Hugging Face dataset: a folder ``save_to_disk`` wrote, or (online) a hub name. A class
    label column (integers with names) reads as its names."""
    import datasets

    dataset = load_split(source, split, arg="path")
    for arg, column in (("text_column", text_column), ("label_column", label_column)):
        if str(column) not in dataset.column_names:
            raise _columns_error(source, column, arg, dataset.column_names, False)
    feature = dataset.features[str(label_column)]
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    return [
        _row(source, number, text, names[label] if names else label)
        for number, (text, label) in enumerate(
            zip(dataset[str(text_column)], dataset[str(label_column)], strict=True), 1
        )
    ]


def read_labelled(
    path: str | Path,
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    hf_split: str = "train",
) -> Rows:
    """The (text, label) rows of ``path``, by its kind: ``.csv``; ``.jsonl``/``.json`` (one object
    a line); a folder (a saved Hugging Face dataset); a name that is no file (a hub dataset);
    anything else is read as TSV (``.tsv``, ``.txt``, or no suffix like ``SMSSpamCollection``).
    ``label_column=None`` reads texts without labels (to classify them)."""
    file = Path(path).expanduser()
    if file.is_dir() or not file.exists():
        if not file.exists() and (str(path).startswith((".", "/", "~")) or file.suffix):
            raise DataError(
                f"{path}: no such file (give a .csv, .tsv, .jsonl file or a Hugging Face dataset)"
            )
        if label_column is None:
            return [(text, "") for text, _ in _hf(str(path), hf_split, text_column, text_column)]
        return _hf(str(path), hf_split, text_column, label_column)
    if file.suffix.lower() == ".csv":
        return _table(file, ",", text_column, label_column)
    if file.suffix.lower() in (".jsonl", ".json"):
        return _jsonl(file, text_column, label_column)
    return _table(file, "\t", text_column, label_column)

"""Multiple choice, scored as the harness scores HellaSwag (Zellers et al. 2019).

An item is a context (``ctx``), candidate ``endings`` and the index of the right one (``label``).
Each ending is scored as the continuation ``" " + ending`` after the context (the harness's
default ``target_delimiter``), and the model picks

- ``acc``: the ending with the highest summed log-likelihood;
- ``acc_norm``: the highest log-likelihood divided by the ending's length in characters (without
  the space), which stops long endings from losing only for having more tokens to pay for.

These are exactly the harness's ``process_results`` for ``output_type: multiple_choice``
(``lm_eval/api/task.py``), ties going to the first ending as ``numpy.argmax`` does. The baseline
beside them is ``random_acc``, the expected accuracy of a uniform guess (the mean of 1 / number of
endings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_lab.data.hub import load_split
from llm_lab.errors import DataError
from llm_lab.eval.files import field, read_jsonl
from llm_lab.eval.scoring import Scorer


@dataclass(frozen=True)
class Choice:
    """One multiple-choice item; ``where`` names its file and row, for errors."""

    ctx: str
    endings: tuple[str, ...]
    label: int
    where: str = ""


@dataclass(frozen=True)
class Scored:
    """An item's log-likelihood per ending, and the endings ``acc`` and ``acc_norm`` pick."""

    loglikelihoods: tuple[float, ...]
    pred: int
    pred_norm: int


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima


def read_choices(path: str | Path) -> list[Choice]:
    """HellaSwag-format items (``ctx``, ``endings``, ``label``) from a ``.jsonl`` file."""
    path = Path(path)
    items = []
    for row in read_jsonl(path):
        ctx = field(row, path, "ctx", str, '"ctx": "A man sits down"')
        endings = field(row, path, "endings", list, '"endings": ["and eats.", "and flies."]')
        label = field(row, path, "label", int, '"label": 0')
        items.append(choice(ctx, endings, label, f"{path}, row {row['_row']}"))
    return items


# The columns of a multiple-choice dataset, by default HellaSwag's own names.
COLUMNS = {"ctx": "ctx", "endings": "endings", "label": "label"}


def read_hub_choices(
    name: str, split: str = "validation", config: str | None = None, columns: dict[str, str] | None = None
) -> list[Choice]:
    """Multiple-choice items from a Hugging Face dataset: a folder ``datasets`` saved
    (``save_to_disk``) or a hub name, its ``columns`` mapping ``ctx``, ``endings`` and ``label`` to
    the dataset's own column names (HellaSwag's by default; a label may be a digit string, as
    HellaSwag's is)."""
    columns = {**COLUMNS, **(columns or {})}
    rows = load_split(name, split, config, arg="tasks")
    missing = [ours for ours, theirs in columns.items() if theirs not in rows.column_names]
    if missing:
        raise DataError(
            f"{name}: no column {', '.join(repr(columns[m]) for m in missing)} for {', '.join(missing)} "
            f"(its columns: {', '.join(rows.column_names)}; map them with hub_columns)"
        )
    items = []
    for i, row in enumerate(rows):
        label = row[columns["label"]]
        if isinstance(label, str) and label.strip().isdigit():
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool):
            raise DataError(f"{name}, row {i}: label {label!r} is not the index of an ending")
        items.append(choice(row[columns["ctx"]], list(row[columns["endings"]]), label, f"{name}, row {i}"))
    return items


def choice(ctx: str, endings: list[str], label: int, where: str) -> Choice:
    """One item, its endings and label checked; ``where`` names its source and row for errors."""
    if not isinstance(ctx, str):
        raise DataError(f"{where}: the context is not text, got {ctx!r}")
    if len(endings) < 2 or not all(isinstance(e, str) and e.strip() for e in endings):
        raise DataError(f"{where}: endings must be 2 or more non-empty strings, got {endings!r}")
    if not 0 <= label < len(endings):
        raise DataError(
            f"{where}: label {label} is out of range for {len(endings)} endings "
            f"(use 0 to {len(endings) - 1}, the index of the right ending)"
        )
    return Choice(ctx, tuple(endings), label, where)


def score_choices(scorer: Scorer, items: Sequence[Choice]) -> list[Scored]:
    """Every ending of every item, all scored in batches of the scorer's size."""
    pairs, owners = [], []
    for i, item in enumerate(items):
        for ending in item.endings:
            pair = scorer.encode_pair(item.ctx, " " + ending)
            if len(pair[1]) > scorer.context_length:
                raise DataError(
                    f"{item.where or f'item {i}'}: the ending {ending[:40]!r} is {len(pair[1])} tokens, more "
                    f"than the model's window of {scorer.context_length} (shorten it, or use a model with a "
                    "longer context)"
                )
            pairs.append(pair)
            owners.append(i)
    values: list[list[float]] = [[] for _ in items]
    for i, result in zip(owners, scorer.loglikelihoods(pairs), strict=True):
        values[i].append(result.value)
    scored = []
    for item, lls in zip(items, values, strict=True):
        normed = [ll / len(ending) for ll, ending in zip(lls, item.endings, strict=True)]
        scored.append(Scored(tuple(lls), _argmax(lls), _argmax(normed)))
    return scored


def choice_metrics(items: Sequence[Choice], scored: Sequence[Scored]) -> dict[str, float]:
    """``acc``, ``acc_norm`` and the ``random_acc`` baseline, with the item count ``n``."""
    n = len(items)
    return {
        "acc": sum(s.pred == item.label for item, s in zip(items, scored, strict=True)) / n,
        "acc_norm": sum(s.pred_norm == item.label for item, s in zip(items, scored, strict=True)) / n,
        "random_acc": sum(1 / len(item.endings) for item in items) / n,
        "n": n,
    }

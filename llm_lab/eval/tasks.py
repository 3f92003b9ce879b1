"""Tasks by name: the built-in ones, task files, and the harness's tasks, each run to its metrics.

A task is given as

- ``bpb``: the run's own validation split (held-out text: bits per byte, NLL per token, perplexity);
- ``docs_mc``, ``docs_cloze``, ``docs_bpb``: the built-in offline tasks (:mod:`llm_lab.eval.builtin`);
- a file, named by its stem: a ``.jsonl`` whose rows have ``ctx``/``endings``/``label`` (multiple
  choice), ``context``/``word`` (cloze) or ``text`` (one document per row); any other file is
  held-out text read by the corpus rules;
- ``hf:NAME``: multiple choice from a Hugging Face dataset (a hub name, or a folder ``datasets``
  saved), its columns mapped by ``hub_columns`` (HellaSwag's names by default);
- ``lm_eval:NAME``: a task of the lm-evaluation-harness, run through :mod:`llm_lab.eval.harness`.

Every result carries its baseline: ``random_acc`` for multiple choice, ``unigram_bits_per_byte``
for text, ``unigram_perplexity`` for cloze (:mod:`llm_lab.eval.baselines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from llm_lab.data.corpus import Corpus
from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval import builtin
from llm_lab.eval.baselines import Unigram
from llm_lab.eval.cloze import Cloze, cloze_metrics, read_cloze, score_cloze
from llm_lab.eval.files import read_jsonl
from llm_lab.eval.multiple_choice import (
    COLUMNS,
    Choice,
    choice_metrics,
    read_choices,
    read_hub_choices,
    score_choices,
)
from llm_lab.eval.scoring import Scorer
from llm_lab.eval.text import read_documents, score_text

BUILTIN_TASKS = ("bpb", "docs_mc", "docs_cloze", "docs_bpb")
HARNESS_PREFIX = "lm_eval:"
HUB_PREFIX = "hf:"
Metrics = dict[str, float]


@dataclass(frozen=True)
class Task:
    """A task's name, and its items: documents (str), :class:`Choice` or :class:`Cloze` items."""

    name: str
    items: tuple[str, ...] | tuple[Choice, ...] | tuple[Cloze, ...]


def task_name(spec: str) -> str:
    """The name a task's results go under: a file's stem, or the name as given."""
    if spec.startswith(HARNESS_PREFIX) or spec in BUILTIN_TASKS:
        return spec
    if spec.startswith(HUB_PREFIX):
        return HUB_PREFIX + Path(spec.removeprefix(HUB_PREFIX)).name
    return Path(spec).stem


def read_task_file(path: Path) -> Task:
    """A task file, its kind told by its suffix and its first row's fields."""
    if path.suffix != ".jsonl":
        return Task(path.stem, tuple(read_documents(path)))
    first = read_jsonl(path)[0]
    if "endings" in first or "ctx" in first:
        return Task(path.stem, tuple(read_choices(path)))
    if "word" in first or "context" in first:
        return Task(path.stem, tuple(read_cloze(path)))
    if "text" in first:
        return Task(path.stem, tuple(read_documents(path)))
    fields = ", ".join(k for k in first if k != "_row")
    raise DataError(
        f"{path}, row {first['_row']}: fields {fields} make no task (multiple choice: ctx, endings, label; "
        "cloze: context, word; held-out text: text)"
    )


class Evaluation:
    """Runs tasks on one model: ``scorer`` reads text, ``corpus`` is what the model trained on
    (its validation split is ``bpb``, its training split fits the unigram baseline). ``stride`` is
    the sliding window's step for long documents; ``limit`` keeps the first items of each task."""

    def __init__(
        self,
        scorer: Scorer,
        corpus: Corpus,
        stride: int | None = None,
        limit: int | None = None,
        hub_split: str = "validation",
        hub_config: str | None = None,
        hub_columns: dict[str, str] | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ArgumentError("limit", f"{limit} < 1", "use null (every item) or a count")
        unknown = sorted(set(hub_columns or {}) - set(COLUMNS))
        if unknown:
            raise ArgumentError("hub_columns", f"{unknown} are not {', '.join(COLUMNS)}", "map only those")
        self.scorer, self.corpus, self.stride, self.limit = scorer, corpus, stride, limit
        self.hub = {"split": hub_split, "config": hub_config, "columns": dict(hub_columns or {})}

    @cached_property
    def unigram(self) -> Unigram:
        return Unigram.fit(self.scorer.tokenizer, self.corpus.train_documents())

    def task(self, spec: str) -> Task:
        """The task ``spec`` names (see the module's docstring)."""
        if spec == "bpb":
            items: Sequence = tuple(self.corpus.val_documents())
        elif spec in ("docs_mc", "docs_cloze", "docs_bpb"):
            items = getattr(builtin, spec)()
        elif spec.startswith(HUB_PREFIX):
            items = read_hub_choices(spec.removeprefix(HUB_PREFIX), **self.hub)  # type: ignore[arg-type]
        elif Path(spec).expanduser().exists():
            return self._limited(read_task_file(Path(spec).expanduser()))
        else:
            raise ArgumentError(
                "tasks",
                f"{spec!r} is neither a built-in task nor an existing file",
                f"use {', '.join(BUILTIN_TASKS)}, {HUB_PREFIX}NAME, {HARNESS_PREFIX}NAME or a .jsonl or .txt",
            )
        return self._limited(Task(task_name(spec), tuple(items)))

    def _limited(self, task: Task) -> Task:
        if not task.items:
            raise DataError(f"{task.name}: the task has no items")
        return Task(task.name, task.items[: self.limit]) if self.limit else task

    def run(self, spec: str) -> Metrics:
        """The metrics of one task, with its baseline and item count ``n``."""
        if spec.startswith(HARNESS_PREFIX):
            from llm_lab.eval.harness import run_harness_task

            return run_harness_task(self.scorer, spec.removeprefix(HARNESS_PREFIX), self.limit)
        task = self.task(spec)
        first = task.items[0]
        if isinstance(first, Choice):
            choices = [item for item in task.items if isinstance(item, Choice)]
            return choice_metrics(choices, score_choices(self.scorer, choices))
        if isinstance(first, Cloze):
            cloze = [item for item in task.items if isinstance(item, Cloze)]
            metrics = cloze_metrics(score_cloze(self.scorer, cloze))
            return {**metrics, "unigram_perplexity": self.unigram.word_perplexity(self.scorer, cloze)}
        documents = [item for item in task.items if isinstance(item, str)]
        metrics = score_text(self.scorer, documents, self.stride)
        baseline = self.unigram.bits_per_byte(self.scorer.tokenizer, documents)
        return {**metrics, "unigram_bits_per_byte": baseline}

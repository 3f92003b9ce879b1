"""The built-in tasks, made offline from the held-out modules' docstrings (:mod:`llm_lab.eval.heldout`).

- ``docs_mc``: multiple choice. The context is a function's (or class's) qualified name and
  signature, ``json.dumps(obj, *, skipkeys=False, ...):``; the right ending is the first sentence of
  its docstring, the three others the first sentences of other objects of the same package (so the
  vocabulary alone does not give the answer away).
- ``docs_cloze``: the last word of a docstring's first paragraph, LAMBADA-style.
- ``docs_bpb``: every docstring as a held-out document, for bits per byte.

Everything is drawn in a fixed order with a fixed seed, so a task is the same items in every run on
the same Python.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from functools import cache

from llm_lab.eval.cloze import Cloze
from llm_lab.eval.heldout import Documented, documented
from llm_lab.eval.multiple_choice import Choice

SEED = 0
DISTRACTORS = 3
# A first sentence: up to the first full stop followed by a space or the end of the paragraph.
_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)")
_LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z]{3,})\.$")


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def first_sentence(doc: str) -> str | None:
    """The first sentence of a docstring, on one line; None if its first paragraph has no full
    stop (a signature line, a heading) or the sentence is too short or long to be an answer."""
    match = _SENTENCE.match(_first_paragraph(doc))
    if match is None or not 10 <= len(match.group(1)) <= 200:
        return None
    return match.group(1)


@cache
def docs_mc() -> tuple[Choice, ...]:
    """Which first sentence documents this signature? Four candidates from one package."""
    rng = random.Random(SEED)
    answers: dict[str, list[tuple[Documented, str]]] = defaultdict(list)
    for obj in documented():
        sentence = first_sentence(obj.doc)
        if sentence is not None:
            answers[obj.package].append((obj, sentence))
    items: list[Choice] = []
    for package in sorted(answers):
        entries = answers[package]
        for obj, sentence in entries:
            others = sorted({s for _, s in entries if s != sentence})
            if len(others) < DISTRACTORS:
                continue
            endings = [sentence, *rng.sample(others, DISTRACTORS)]
            rng.shuffle(endings)
            ctx = f"{obj.module}.{obj.qualname}{obj.signature}:"
            items.append(Choice(ctx, tuple(endings), endings.index(sentence), f"docs_mc, item {len(items)}"))
    return tuple(items)


@cache
def docs_cloze() -> tuple[Cloze, ...]:
    """The last word of each docstring's first paragraph (when it is a word of 3+ letters)."""
    items: list[Cloze] = []
    seen = set()
    for obj in documented():
        paragraph = _first_paragraph(obj.doc)
        match = _LAST_WORD.match(paragraph)
        if match is None or paragraph in seen:
            continue
        seen.add(paragraph)
        items.append(Cloze(match.group(1), match.group(2), f"docs_cloze, item {len(items)}"))
    return tuple(items)


@cache
def docs_bpb() -> tuple[str, ...]:
    """Every distinct docstring of the held-out modules, as one document each."""
    return tuple(dict.fromkeys(obj.doc for obj in documented()))

"""``docs_topics``: the built-in text-classification set — docstrings of the installed Python's
standard library, labelled by the family of the package they document (no download).

Each example is one paragraph of a docstring (a few sentences: the length of an SMS or a review, the
texts Raschka's ch. 6 classifies), and its label is one of :data:`FAMILIES` — ``concurrency`` for
``asyncio.Queue.get``'s, ``storage`` for ``pickle.dump``'s. Functions written in C (``math.sqrt``)
count as much as Python ones. A module is wholly in one split (:func:`module_split`, a hash of its
name), so a test score is on modules the classifier never read; the modules that evaluation keeps
(:func:`llm_lab.eval.heldout.is_heldout`) are never read at all.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

from llm_lab.eval.heldout import _modules, is_heldout

# Package families (the label) and the top-level modules that make each. Evaluation's modules are
# left out where they are read (json, csv, email...), so listing them here would change nothing.
FAMILIES: dict[str, tuple[str, ...]] = {
    "text": ("string", "re", "unicodedata", "codecs", "stringprep", "locale", "encodings", "html", "shlex"),
    "numbers": ("math", "cmath", "decimal", "random", "numbers", "operator", "colorsys"),
    "files": ("os", "pathlib", "glob", "fnmatch", "tempfile", "stat", "io", "fileinput", "posixpath", "mmap"),
    "concurrency": (
        "threading", "multiprocessing", "concurrent", "asyncio", "queue", "sched", "subprocess", "contextvars"
    ),
    "network": ("socket", "ssl", "socketserver", "xmlrpc", "wsgiref", "poplib", "select", "selectors"),
    "storage": ("pickle", "shelve", "dbm", "sqlite3", "zlib", "gzip", "bz2", "lzma", "base64", "pickletools"),
    "devtools": (
        "unittest", "doctest", "pydoc", "inspect", "dis", "ast", "tokenize", "traceback", "bdb", "timeit"
    ),
    "datatypes": (
        "collections", "heapq", "bisect", "array", "weakref", "types", "copy", "enum", "functools",
        "itertools", "dataclasses", "contextlib", "abc", "typing", "pprint", "reprlib",
    ),
}  # fmt: skip
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One labelled text, and the module it comes from (what keeps a module in one split)."""

    text: str
    label: str
    module: str


def split_by_module(
    examples: list[Example], val_fraction: float = 0.15, test_fraction: float = 0.15
) -> dict[str, list[Example]]:
    """Train, val and test examples, every module wholly in one split. Within each family the
    modules are taken in the order of a hash of their name (the same on every machine, unlike
    ``hash``) and each joins the split furthest below its share of the family's examples, so every
    family is in every split at about the shares asked for."""
    targets = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for family in dict.fromkeys(e.label for e in examples):
        by_module: dict[str, list[Example]] = {}
        for example in examples:
            if example.label == family:
                by_module.setdefault(example.module, []).append(example)
        total, sizes = sum(map(len, by_module.values())), dict.fromkeys(SPLITS, 0)
        for module in sorted(by_module, key=lambda m: hashlib.sha256(m.encode()).hexdigest()):
            name = max(SPLITS, key=lambda s: targets[s] * total - sizes[s])  # the most examples short
            splits[name] += by_module[module]
            sizes[name] += len(by_module[module])
    return splits


def _documented(module: object) -> Iterator[object]:
    """The public functions and classes (Python or C) defined in ``module``, and their methods."""
    name = getattr(module, "__name__", "")
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            yield obj
            yield from (
                v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and inspect.isroutine(v)
            )
        elif inspect.isroutine(obj):
            yield obj


def paragraphs(doc: str, min_words: int = 6) -> list[str]:
    """A cleaned docstring's paragraphs of prose: blank-line separated, lines joined, at least
    ``min_words`` words, doctest examples (``>>>``) left out."""
    found = []
    for block in inspect.cleandoc(doc).split("\n\n"):
        text = " ".join(line.strip() for line in block.splitlines())
        if len(text.split()) >= min_words and ">>>" not in text:
            found.append(text)
    return found


def docs_topics() -> list[Example]:
    """Every example of the built-in set, in a fixed order (family, module, object); a paragraph
    repeated word for word (an inherited boilerplate) is kept once."""
    examples, seen = [], set()
    for family, tops in FAMILIES.items():
        for top in tops:
            if is_heldout(top):
                continue
            for module in _modules(top):
                for obj in _documented(module):
                    doc = getattr(obj, "__doc__", None)
                    if not isinstance(doc, str):
                        continue
                    for text in paragraphs(doc):
                        if text not in seen:
                            seen.add(text)
                            examples.append(Example(text, family, module.__name__))
    return examples


def training_modules_text() -> list[str]:
    """The training split's texts without their labels, one document per module (its paragraphs
    joined by blank lines): what task-adaptive pretraining reads (Gururangan et al. 2020, "Don't Stop
    Pretraining", §5; ULMFiT's second stage, Howard and Ruder 2018). A validation or test module's
    text is never in it, so a classifier is still scored on modules it never read."""
    by_module: dict[str, list[str]] = {}
    for example in split_by_module(docs_topics())["train"]:
        by_module.setdefault(example.module, []).append(example.text)
    return ["\n\n".join(texts) for _, texts in sorted(by_module.items())]

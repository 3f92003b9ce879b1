"""Where text comes from: the built-in corpus, local files, or a Hugging Face dataset.

A :class:`Corpus` says where the text is and how it is split (the ``data.path``,
``data.hf_dataset``, … ``data.val_fraction`` keys); it is the first step of every text stage's flow
(corpus → tokenizer → ids → DataModule, see README "Architecture"). A corpus is a sequence of
documents (str); documents are the unit of the train/validation split, so no document leaks into
both sides. Its :meth:`Corpus.fingerprint` names the text without reading it, so that what is
computed from a corpus (a trained tokenizer, prepared ids) can be cached and reused.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llm_lab.errors import ArgumentError, DataError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def builtin_corpus() -> list[str]:
    """CPython's own documentation topics (``pydoc_data.topics``): ~65k words of English prose.

    It ships inside every CPython, so the lab trains with no download. Each help topic is a document.
    """
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


# Control characters other than whitespace: in real text, next to none.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
SAMPLE_CHARS = 1 << 20  # the plausibility check reads this much of a file
MAX_CONTROL_SHARE = 0.01  # above this share of control characters a file is not text


def check_plausible_text(text: str, path: Path) -> None:
    """Refuse text that decodes as UTF-8 but is not text: UTF-16 without a byte-order mark is
    ASCII plus NUL bytes (valid UTF-8, and a BPE would learn merges of NULs); warn about a stray one."""
    sample = text[:SAMPLE_CHARS]
    controls = len(_CONTROL.findall(sample))
    if controls > MAX_CONTROL_SHARE * max(len(sample), 1):
        nul = sample.count("\0")
        if nul > 0.25 * len(sample):  # every other byte: UTF-16; which half tells the byte order
            order = "LE" if sample.find("\0") % 2 == 1 else "BE"
            hint = f"it looks like UTF-16{order}: convert it with `iconv -f UTF-16{order} -t UTF-8`"
        else:
            hint = "it looks like a binary file, or text in another encoding: convert it to UTF-8"
        raise DataError(
            f"{path}: {controls / len(sample):.0%} of its characters are control characters; {hint}"
        )
    if controls:
        warnings.warn(f"{path}: {controls} stray control characters (e.g. NUL) in the text", stacklevel=3)


def _read_utf8(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from err
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror}); check its permissions") from err
    check_plausible_text(text, path)
    return text


def text_files(path: str | Path) -> list[Path]:
    """The file itself, or every text file below a folder (sorted, so runs are reproducible)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ArgumentError("path", f"{root} does not exist", "give an existing file or folder")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise ArgumentError("path", f"{root} holds no text files ({', '.join(TEXT_SUFFIXES)})", "add some")
    return files


def read_text_files(path: str | Path) -> list[str]:
    """Read one UTF-8 file, or every text file below a folder, one document per file."""
    return [_read_utf8(p) for p in text_files(path)]


def load_hf_dataset(
    name: str,
    config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    data_files: str | list[str] | None = None,
    max_documents: int | None = None,
) -> list[str]:
    """Load documents from a Hugging Face dataset (``datasets.load_dataset``).

    ``name`` is a hub id (needs the internet) or a builder such as ``"text"`` with ``data_files``
    (works offline; this is how the tests exercise the same path).
    """
    import datasets

    ds = datasets.load_dataset(name, config, split=split, data_files=data_files)
    if text_column not in ds.column_names:
        raise ArgumentError(
            "text_column", f"dataset {name!r} has no column {text_column!r}", f"use one of {ds.column_names}"
        )
    if max_documents is not None:
        ds = ds.select(range(min(max_documents, len(ds))))
    return [str(t) for t in ds[text_column]]


def load_corpus(
    path: str | Path | None = None,
    hf_dataset: str | None = None,
    hf_config: str | None = None,
    hf_split: str = "train",
    hf_data_files: str | list[str] | None = None,
    text_column: str = "text",
    max_documents: int | None = None,
) -> list[str]:
    """Return the corpus as a list of non-empty documents.

    Precedence: ``path`` (local files), then ``hf_dataset``, else the built-in corpus.
    """
    if path is not None and hf_dataset is not None:
        raise ArgumentError("path", "both path and hf_dataset are set", "keep one")
    if path is not None:
        docs = read_text_files(path)
    elif hf_dataset is not None:
        docs = load_hf_dataset(hf_dataset, hf_config, hf_split, text_column, hf_data_files, max_documents)
    else:
        docs = builtin_corpus()
    docs = [d for d in docs if d.strip()]
    if max_documents is not None:
        docs = docs[:max_documents]
    if not docs:
        source = path or hf_dataset or "the built-in corpus"
        raise DataError(f"the corpus from {source} is empty (give text, or another dataset)")
    return docs


def split_documents(docs: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle documents with ``seed`` and hold out ``val_fraction`` of them for validation.

    A corpus of a single document (one file) is split by characters at a line boundary instead,
    so a one-file corpus still gets a validation set.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ArgumentError("val_fraction", f"{val_fraction} is not in (0, 1)", "use e.g. 0.1")
    if len(docs) == 1:
        text = docs[0]
        cut = text.rfind("\n", 0, int(len(text) * (1 - val_fraction)))
        cut = cut if cut > 0 else int(len(text) * (1 - val_fraction))
        return [text[:cut]], [text[cut:]]
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(docs) * val_fraction))
    val = [docs[i] for i in order[:n_val]]
    train = [docs[i] for i in order[n_val:]]
    return train, val


@dataclass(frozen=True)
class Split:
    """A corpus read and split: the training and validation documents, and what they came from."""

    train: list[str]
    val: list[str]
    fingerprint: str


@dataclass(frozen=True)
class Corpus:
    """Where the text comes from and how it is split; :meth:`load` reads it.

    Nothing given: the built-in corpus. ``path``: a UTF-8 file or a folder of text files.
    ``hf_dataset``: a Hugging Face dataset (with ``hf_config``, ``hf_split``, ``hf_data_files`` and
    the ``text_column`` holding the text). ``max_documents`` caps the corpus; ``val_fraction`` of the
    documents, drawn with ``seed``, are held out for validation.
    """

    path: str | None = None
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    hf_data_files: str | list[str] | None = None
    text_column: str = "text"
    max_documents: int | None = None
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ArgumentError("val_fraction", f"{self.val_fraction} is not in (0, 1)", "use e.g. 0.1")
        if self.max_documents is not None and self.max_documents < 1:
            raise ArgumentError("max_documents", f"{self.max_documents} < 1", "use null (all) or a count")

    @classmethod
    def setting_names(cls) -> list[str]:
        """The settings of a corpus: in a ``data/*.yaml`` these keys describe the text."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Corpus:
        """The corpus described by those of ``settings`` that are corpus keys (the rest are left)."""
        names = cls.setting_names()
        return cls(**{k: v for k, v in settings.items() if k in names})

    def load(self) -> Split:
        """Read the documents and split them by document."""
        docs = load_corpus(
            self.path,
            self.hf_dataset,
            self.hf_config,
            self.hf_split,
            self.hf_data_files,
            self.text_column,
            self.max_documents,
        )
        train, val = split_documents(docs, self.val_fraction, self.seed)
        return Split(train, val, self.fingerprint())

    def fingerprint(self) -> str:
        """A short hash naming this text and split without reading it: the settings, and for local
        files their names, sizes and modification times (an edited file changes it)."""
        parts: dict[str, Any] = {"settings": asdict(self)}
        local = [self.path] if self.path is not None else []
        if self.hf_data_files is not None:
            files = [self.hf_data_files] if isinstance(self.hf_data_files, str) else self.hf_data_files
            local += [f for f in files if Path(f).exists()]
        if local:
            stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for f in local for p in text_files(f)]
            parts["files"] = stats
        if self.path is None and self.hf_dataset is None:
            import sys

            parts["builtin"] = sys.version  # pydoc_data.topics changes with the Python release
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

"""Where text comes from: the built-in corpus, local files, or a Hugging Face dataset.

Every stage reads its text through :func:`load_corpus` and splits it with :func:`split_documents`,
so that "which text" is one decision made in one place. A corpus is a list of documents (str);
documents are the unit of the train/validation split, so no document leaks into both sides.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from llm_lab.errors import ConfigError, DataError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def builtin_corpus() -> list[str]:
    """CPython's own documentation topics (``pydoc_data.topics``): ~65k words of English prose.

    It ships inside every CPython, so the lab trains with no download. Each help topic is a document.
    """
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"data.path: {path} is not UTF-8 text (byte {err.start}: {err.reason}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from err


def read_text_files(path: str | Path) -> list[str]:
    """Read one UTF-8 file, or every text file below a folder (sorted, so runs are reproducible)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError("data.path", f"{root} does not exist", "give an existing file or folder")
    if root.is_file():
        return [_read_utf8(root)]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise ConfigError("data.path", f"{root} holds no text files ({', '.join(TEXT_SUFFIXES)})", "add some")
    return [_read_utf8(p) for p in files]


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
        raise ConfigError(
            "data.text_column",
            f"dataset {name!r} has no column {text_column!r}",
            f"use one of {ds.column_names}",
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
        raise ConfigError("data.path", "both data.path and data.hf_dataset are set", "keep one")
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
        raise DataError(
            f"data.path: the corpus from {source} is empty (give text, or another data.hf_dataset)"
        )
    return docs


def split_documents(docs: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle documents with ``seed`` and hold out ``val_fraction`` of them for validation.

    A corpus of a single document (one file) is split by characters at a line boundary instead,
    so a one-file corpus still gets a validation set.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError("data.val_fraction", f"{val_fraction} is not in (0, 1)", "use e.g. 0.1")
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

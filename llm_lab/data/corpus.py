"""Where text comes from: the built-in corpus, local files, or a Hugging Face dataset, streamed.

A :class:`Corpus` says where the text is and how it is split (the ``corpus.path``,
``corpus.hf_dataset``, … ``corpus.val_fraction`` keys); it is the first step of every text stage's flow
(corpus → tokenizer → ids → DataModule, see README "Architecture"). A corpus is a stream of
documents (str), read again for each pass and never held in memory as a whole: a local file is one
document, or several when ``<|endoftext|>`` separates them (TinyStories' layout); a dataset row is
one. Documents are the unit of the train/validation split, so no document leaks into both sides.
Its :meth:`Corpus.fingerprint` names the text without reading it, so that what is computed from a
corpus (a trained tokenizer, prepared ids) can be cached and reused.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llm_lab.data.hub import check_reachable
from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval.heldout import HELDOUT_MODULES, is_heldout

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
DOCUMENT_SEPARATOR = "<|endoftext|>"  # a file holding it is several documents

# Control characters other than whitespace: in real text, next to none.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
SAMPLE_CHARS = 1 << 20  # the plausibility check reads this much of a file
MAX_CONTROL_SHARE = 0.01  # above this share of control characters a file is not text

log = logging.getLogger(__name__)
_warned_shares: set[str] = set()  # fingerprints of corpora whose split was warned about


# A help topic that is a module's documentation page starts with its name: '"pdb" — The Python Debugger'.
_MODULE_PAGE = re.compile(r'^"([\w.]+)" — ')


def topic_module(topic: str) -> str | None:
    """The module a help topic documents (``pdb`` for the debugger's page), None for other topics."""
    match = _MODULE_PAGE.match(topic)
    return match.group(1) if match else None


def builtin_corpus() -> list[str]:
    """CPython's own documentation topics (``pydoc_data.topics``): ~65k words of English prose.

    It ships inside every CPython, so the lab trains with no download. Each help topic is a document,
    except the pages of modules kept for evaluation (``llm_lab.eval.heldout``): a model is never
    scored on text it was trained on.
    """
    from pydoc_data.topics import topics

    pages = [topics[name] for name in sorted(topics)]
    return [page for page in pages if not is_heldout(topic_module(page) or "")]


# Byte-order marks of the encodings a text editor may save in instead of UTF-8, longest first:
# UTF-32LE's mark starts with UTF-16LE's.
_FOREIGN_BOMS = [
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
]


def conversion(path: Path, encoding: str) -> str:
    """The fix of a file in another encoding than UTF-8: the command that writes a UTF-8 copy."""
    return f"convert it: iconv -f {encoding} -t UTF-8 {path} > {path}.utf8.txt, and use the copy in its place"


def check_plausible_text(text: str, path: Path) -> None:
    """Refuse text that decodes as UTF-8 but is not text: UTF-16 without a byte-order mark is
    ASCII plus NUL bytes (valid UTF-8, and a BPE would learn merges of NULs); warn about a stray one."""
    sample = text[:SAMPLE_CHARS]
    controls = len(_CONTROL.findall(sample))
    if controls > MAX_CONTROL_SHARE * max(len(sample), 1):
        nul = sample.count("\0")
        if nul > 0.25 * len(sample):  # every other byte: UTF-16; which half tells the byte order
            order = "LE" if sample.find("\0") % 2 == 1 else "BE"
            hint = f"it looks like UTF-16{order} ({conversion(path, f'UTF-16{order}')})"
        else:
            hint = "it looks like a binary file, or text in another encoding (convert it to UTF-8)"
        raise DataError(
            f"{path}: {controls / len(sample):.0%} of its characters are control characters; {hint}"
        )
    if controls:
        warnings.warn(f"{path}: {controls} stray control characters (e.g. NUL) in the text", stacklevel=3)


def decode_error(path: Path, err: UnicodeDecodeError) -> DataError:
    """What to tell a user whose file is not UTF-8, with the ``iconv`` command that converts it.

    A byte-order mark names the encoding. Without one, text of a Western language is mostly ASCII
    with some accented letters: if under a third of its bytes are non-ASCII and it decodes as
    CP1252 (Windows' Western code page, whose letters include Latin-1's), it most likely is that.
    Cyrillic, Greek or East Asian text is mostly non-ASCII bytes and its code page cannot be told
    reliably from the bytes alone, so the user is asked for it."""
    data: bytes = err.object
    encoding = next((name for bom, name in _FOREIGN_BOMS if data.startswith(bom)), None)
    if encoding is not None:
        problem = f"{encoding} text (it starts with a {encoding} byte-order mark), not UTF-8"
    else:
        problem = f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        sample = data[:SAMPLE_CHARS]
        non_ascii = sum(byte >= 0x80 for byte in sample) / len(sample)
        try:
            sample.decode("cp1252")
            western = non_ascii < 1 / 3
        except UnicodeDecodeError:
            western = False
        if western:
            encoding, problem = "CP1252", f"{problem}, probably CP1252 (Windows Western)"
        else:
            encoding = "<its encoding>"
            problem += ": another code page (e.g. CP1251, GBK, Shift_JIS; `iconv -l` lists them), or not text"
    return DataError(f"{path}: {problem} ({conversion(path, encoding)})")


def read_text(path: Path) -> str:
    """A UTF-8 text file's content (a UTF-8 byte-order mark, which some editors write, dropped), or
    a DataError naming the file and the fix."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise decode_error(path, err) from None
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
    if not root.is_dir():  # a FIFO, /dev/null, a socket: nothing to read documents from
        raise ArgumentError(
            "path", f"{root} is neither a regular file nor a folder", "give a text file or a folder"
        )
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES and not _is_output(p, root)
    )
    if not files:
        raise ArgumentError("path", f"{root} holds no text files ({', '.join(TEXT_SUFFIXES)})", "add some")
    return files


def _is_output(file: Path, root: Path) -> bool:
    """Whether a file below ``root`` is something other than corpus text: inside a hidden folder
    (``.git``, ``.hydra``) or inside a lab run folder (one holding ``.hydra/``), whose
    ``vectors.txt`` is numbers written by a run, not text to learn from."""
    relative = file.relative_to(root)
    if any(part.startswith(".") for part in relative.parts[:-1]):
        return True
    return any((root / parent / ".hydra").is_dir() for parent in relative.parents)


def file_documents(path: str | Path) -> Iterator[str]:
    """The documents of a file or folder, one file at a time: a file is one document, or several
    separated by ``<|endoftext|>``."""
    for file in text_files(path):
        yield from read_text(file).split(DOCUMENT_SEPARATOR)


def hf_documents(
    name: str,
    config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    data_files: str | list[str] | None = None,
    streaming: bool = False,
) -> Iterator[str]:
    """The documents of a Hugging Face dataset (``datasets.load_dataset``), row by row.

    ``name`` is a hub id (needs the internet) or a builder such as ``"text"`` with ``data_files``
    (works offline; this is how the tests exercise the same path). With ``streaming`` the rows are
    read as they are needed and nothing is downloaded in full (what a 40 GB hub dataset wants).
    """
    import datasets

    check_reachable(
        name,
        "hf_dataset",
        "connect to the internet, or use local files (corpus.path=...); a dataset already in the "
        "local cache loads with HF_HUB_OFFLINE=1",
    )
    try:
        ds = datasets.load_dataset(name, config, split=split, data_files=data_files, streaming=streaming)
        columns = ds.column_names or []
        if columns and text_column not in columns:
            raise ArgumentError(
                "text_column", f"dataset {name!r} has no column {text_column!r}", f"use one of {columns}"
            )
        for row in ds:  # a streamed dataset reaches the hub here, row by row
            yield str(row[text_column])
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        # No connection, no such dataset, config, split or files, a file it cannot parse.
        if isinstance(err, ArgumentError):
            raise
        inner = err.__cause__ or err  # "An error occurred while generating the dataset" hides why
        reason = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
        raise ArgumentError(
            "hf_dataset",
            f"{name!r} could not be read ({reason[:300]})",
            "check the name, config and split, and the internet connection; offline, use local files",
        ) from None


def _uniform(seed: int, index: int) -> float:
    """A number in [0, 1) that depends only on (seed, index): the split's coin for one document."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(
    documents: Iterable[str],
    val_fraction: float,
    seed: int,
    on_split: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[bool, str]]:
    """``(is_validation, document)`` for every document of a stream, in order.

    Document i goes to validation when a hash of (seed, i) falls below ``val_fraction``: the split
    needs no count of the documents and no shuffle in memory, and each pass over the same source
    splits it the same way. Two corner cases keep a validation set: if no document drew
    validation, the last one goes there; a corpus of a single document is cut by characters at a
    line boundary instead (a one-file corpus still gets a validation set). Once a stream of several
    documents is split to its end, ``on_split(validation documents, documents)`` is called: on a few
    documents the share can be far from ``val_fraction``, and only the counts tell.
    """
    held: str | None = None
    index = val = 0
    for index, doc in enumerate(documents):  # noqa: B007 - index is read after the loop
        if held is not None:
            is_val = _uniform(seed, index - 1) < val_fraction
            val += is_val
            yield is_val, held
        held = doc
    if held is None:
        return
    if index == 0:  # a single document: train on its start, validate on its end
        cut = held.rfind("\n", 0, int(len(held) * (1 - val_fraction)))
        cut = cut if cut > 0 else int(len(held) * (1 - val_fraction))
        yield False, held[:cut]
        yield True, held[cut:]
        return
    is_val = val == 0 or _uniform(seed, index) < val_fraction
    yield is_val, held
    if on_split is not None:
        on_split(val + is_val, index + 1)


@dataclass(frozen=True)
class Split:
    """A corpus read and split in memory: the training and validation documents (small corpora)."""

    train: list[str]
    val: list[str]
    fingerprint: str


@dataclass(frozen=True)
class Corpus:
    """Where the text comes from and how it is split.

    Nothing given: the built-in corpus. ``path``: a UTF-8 file or a folder of text files.
    ``hf_dataset``: a Hugging Face dataset (with ``hf_config``, ``hf_split``, ``hf_data_files``,
    ``hf_streaming`` and the ``text_column`` holding the text). ``docstrings`` adds to the built-in
    corpus the standard library's docstrings that ``docs_topics`` trains its classifier on (one
    document per module, :func:`~llm_lab.data.docs_topics.training_modules_text`): task-adaptive
    pretraining. ``max_documents`` caps the corpus; a hashed ``val_fraction`` of the documents (drawn
    with ``seed``) is held out for validation.
    """

    path: str | None = None
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    hf_data_files: str | list[str] | None = None
    hf_streaming: bool = False
    text_column: str = "text"
    docstrings: bool = False
    max_documents: int | None = None
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.path is not None and self.hf_dataset is not None:
            raise ArgumentError("path", "both path and hf_dataset are set", "keep one")
        if self.docstrings and (self.path is not None or self.hf_dataset is not None):
            raise ArgumentError(
                "docstrings",
                "adds to the built-in corpus, and path or hf_dataset replaces it",
                "drop docstrings=true, or path and hf_dataset",
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ArgumentError("val_fraction", f"{self.val_fraction} is not in (0, 1)", "use e.g. 0.1")
        if self.max_documents is not None and self.max_documents < 1:
            raise ArgumentError("max_documents", f"{self.max_documents} < 1", "use null (all) or a count")
        if self.path is not None:
            text_files(self.path)  # a missing path is reported now, not on the first read

    @classmethod
    def setting_names(cls) -> list[str]:
        """The settings of a corpus: in a ``data/*.yaml`` these keys describe the text."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Corpus:
        """The corpus described by those of ``settings`` that are corpus keys (the rest are left)."""
        names = cls.setting_names()
        return cls(**{k: v for k, v in settings.items() if k in names})

    def documents(self) -> Iterator[str]:
        """Every non-empty document, streamed from the source (at most ``max_documents``)."""
        if self.path is not None:
            source: Iterable[str] = file_documents(self.path)
        elif self.hf_dataset is not None:
            source = hf_documents(
                self.hf_dataset,
                self.hf_config,
                self.hf_split,
                self.text_column,
                self.hf_data_files,
                self.hf_streaming,
            )
        else:
            source = builtin_corpus()
            if self.docstrings:
                from llm_lab.data.docs_topics import training_modules_text

                source += training_modules_text()
        count = 0
        for doc in source:
            if doc.strip():
                count += 1
                yield doc
                if count == self.max_documents:
                    return
        if count == 0:
            where = self.path or self.hf_dataset or "the built-in corpus"
            raise DataError(f"the corpus from {where} is empty (give text, or another dataset)")

    def _assigned(self) -> Iterator[tuple[bool, str]]:
        """:func:`assign` over this corpus's documents."""
        return assign(self.documents(), self.val_fraction, self.seed, self._check_val_share)

    def _check_val_share(self, val: int, total: int) -> None:
        """Warn (once per corpus and process, not on every pass) when the split by whole documents
        gave validation far more than ``val_fraction``: 1 of 3 documents is 33%, whatever was asked.
        Every document in validation leaves nothing to train on: an error, naming ``val_fraction``
        (the tokenizer or the model would only say that its training text is empty)."""
        if val == total:
            raise ArgumentError(
                "val_fraction",
                f"all {total} documents went to validation (val_fraction={self.val_fraction}), "
                "none to training",
                "lower val_fraction, or give more documents",
            )
        if val / total <= 2 * self.val_fraction:
            return
        fingerprint = self.fingerprint()
        if fingerprint in _warned_shares:
            return
        _warned_shares.add(fingerprint)
        log.warning(
            f"val_fraction: validation got {val} of {total} documents ({val / total:.0%}), far more than "
            f"the {self.val_fraction} asked, as the split keeps documents whole (give more documents, "
            f"or cut a big file into several with {DOCUMENT_SEPARATOR} between them)"
        )

    def _side(self, validation: bool) -> Iterator[str]:
        return (doc for is_val, doc in self._assigned() if is_val == validation)

    def train_documents(self) -> Iterator[str]:
        """The training documents, streamed (each call reads the source again)."""
        return self._side(False)

    def val_documents(self) -> Iterator[str]:
        """The validation documents, streamed."""
        return self._side(True)

    def load(self) -> Split:
        """Both sides in memory, for corpora that fit (CBoW, the tokenizer stages, tests)."""
        train: list[str] = []
        val: list[str] = []
        for is_val, doc in self._assigned():
            (val if is_val else train).append(doc)
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
            parts["builtin"] = sys.version  # pydoc_data.topics changes with the Python release
            parts["heldout"] = HELDOUT_MODULES  # and what is left out of it for evaluation
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def size_in_bytes(self) -> int | None:
        """The UTF-8 size of local files (for a progress bar's ETA), None for other sources."""
        if self.path is None:
            return None
        return sum(p.stat().st_size for p in text_files(self.path))

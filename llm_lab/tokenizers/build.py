"""The tokenizer step of every text stage: corpus → tokenizer, built once per corpus and settings.

``train.py`` calls :func:`build_tokenizer` between the corpus and the DataModule and hands the one
tokenizer it returns to the data, the model and the callbacks. A tokenizer *trained* on the corpus
(the regex-word vocabulary of Raschka ch. 2.3, the byte-level BPE of ch. 2.5) depends only on the
training documents and its settings, so it is stored under ``cache_dir`` keyed by both: a second
run, every trial of a sweep and every DDP rank load it instead of training it again. A tokenizer
given as a file (``path``) or a Hugging Face name is simply loaded.

A cache entry is a folder ``<kind>-<hash>/`` with the ``tokenizer.json`` and, written last, a
``key.json`` recording what the entry is (kind, settings, corpus fingerprint, vocabulary size) and
the xxh3 checksum of the ``tokenizer.json`` bytes. An entry is used only when all of it matches;
one that does not (truncated, replaced, another size in the slot) is moved aside to
``<entry>.damaged`` with one warning line naming it, and the tokenizer is trained again: a
damaged entry costs one rebuild, never a wrong tokenizer nor a failure of every later run. A good
entry is read without a lock or any write, so a read-only shared cache serves it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import xxhash

from llm_lab.atomic import replacing
from llm_lab.errors import ArgumentError, DataError, UnknownArgument
from llm_lab.locks import exclusive
from llm_lab.tokenizers.base import Tokenizer, read_json
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.simple import SimpleTokenizer

KINDS = ("simple", "bpe", "hf")
CACHE_VERSION = 2  # bump when a tokenizer trained from the same settings would come out different
KEY_FILE = "key.json"  # 2: what the entry is, and the checksum of its tokenizer.json
log = logging.getLogger(__name__)


def train_tokenizer(kind: str, documents: Iterable[str], **settings: Any) -> Tokenizer:
    """Train a ``simple`` (regex words) or ``bpe`` (byte-level BPE) tokenizer on ``documents``."""
    trainers: dict[str, Callable[..., Tokenizer]] = {
        "simple": SimpleTokenizer.from_corpus,
        "bpe": FastBPETokenizer.train,
    }
    if kind not in trainers:
        raise ArgumentError("kind", f"{kind!r} cannot be trained", "use simple or bpe, or give a path")
    # A setting meant for another kind (vocab_size reaching the simple tokenizer) is named here,
    # not as a TypeError from inside the call.
    accepted = inspect.signature(trainers[kind]).parameters
    unknown = [name for name in settings if name not in accepted]
    if unknown:
        takes = ", ".join(p for p in accepted if p not in ("docs", "documents", "text", "files"))
        what = "is not a setting" if len(unknown) == 1 else "are not settings"
        raise UnknownArgument(unknown, f"{what} of the {kind} tokenizer (it takes {takes})")
    sources = ("self", "docs", "documents", "text", "files")
    needed = [
        name
        for name, parameter in accepted.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in sources
        and name not in settings
    ]
    if needed:  # removed from the settings (~vocab_size): named, not a TypeError from the call
        raise ArgumentError(needed[0], f"the {kind} tokenizer needs a value for it", "give it one")
    if kind == "simple":
        return SimpleTokenizer.from_corpus(documents, **settings)
    return FastBPETokenizer.train(documents=documents, **settings)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load any tokenizer file the lab writes, choosing the class from the file's content:
    the lab's word tokenizer, a byte-level BPE ``tokenizer.json`` (into the lab's own BPE), or any
    other Hugging Face ``tokenizer.json``."""
    document = read_json(path, "a tokenizer file")
    if isinstance(document, dict) and document.get("kind") == SimpleTokenizer.KIND:
        return SimpleTokenizer.load(path)
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, dict):  # valid JSON of something else (a model_config.json, say)
        raise DataError(
            f'{path}: not a tokenizer file (no "model" section; expected a tokenizer.json as train.py '
            "or Hugging Face write it)"
        )
    pre_tokenizer = document.get("pre_tokenizer") if isinstance(document, dict) else None
    if (
        isinstance(model, dict)
        and model.get("type") == "BPE"
        and isinstance(pre_tokenizer, dict)
        and pre_tokenizer.get("type") == "ByteLevel"
    ):
        return FastBPETokenizer.load(path)
    return HFTokenizer.load(path)


def cache_key(kind: str, settings: dict[str, Any], fingerprint: str) -> str:
    """Names a trained tokenizer: its kind, settings and the corpus fingerprint, hashed."""
    text = json.dumps([CACHE_VERSION, kind, settings, fingerprint], sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _entry_key(kind: str, settings: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """What a cache entry must be, as its ``key.json`` records it (JSON's view of the settings)."""
    return json.loads(
        json.dumps({"kind": kind, "settings": settings, "fingerprint": fingerprint}, default=str)
    )


def _save_entry(tokenizer: Tokenizer, entry: Path, key: dict[str, Any]) -> None:
    """Write ``tokenizer.json``, then the ``key.json`` that vouches for it (each atomically)."""
    entry.mkdir(parents=True, exist_ok=True)
    with replacing(entry / "tokenizer.json") as tmp:
        tokenizer.save(tmp)
    record = key | {
        "vocab_size": tokenizer.vocab_size,
        "xxh3": xxhash.xxh3_64((entry / "tokenizer.json").read_bytes()).hexdigest(),
    }
    with replacing(entry / KEY_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")


def _load_entry(entry: Path, key: dict[str, Any]) -> tuple[Tokenizer | None, str | None]:
    """The cached tokenizer if the entry is complete and all of it matches ``key``; else None and
    what is wrong (None too when there is no complete entry: nothing to set aside)."""
    if not (entry / KEY_FILE).is_file():
        return None, None
    try:
        record = json.loads((entry / KEY_FILE).read_text(encoding="utf-8"))
        data = (entry / "tokenizer.json").read_bytes()
        if {name: record.get(name) for name in key} != key:
            return None, f"{KEY_FILE} records another kind, settings or corpus"
        if xxhash.xxh3_64(data).hexdigest() != record.get("xxh3"):
            return None, "tokenizer.json is not the file that was written (checksum mismatch)"
        tokenizer = load_tokenizer(entry / "tokenizer.json")
    except (OSError, ValueError, AttributeError, DataError) as err:
        return None, f"unreadable ({err})"
    if tokenizer.vocab_size != record.get("vocab_size"):
        return None, f"it holds {tokenizer.vocab_size} tokens, {KEY_FILE} says {record.get('vocab_size')}"
    return tokenizer, None


def _set_aside(entry: Path, problem: str) -> None:
    """Move a damaged entry to ``<entry>.damaged`` (to look at), saying so in one line."""
    aside = entry.with_name(f"{entry.name}.damaged")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(entry, aside)
    log.warning(f"cached tokenizer {entry} is damaged ({problem}): moved to {aside}, training it again")


def build_tokenizer(
    kind: str,
    documents: Callable[[], Iterable[str]],
    fingerprint: str,
    cache_dir: str | Path | None = None,
    path: str | Path | None = None,
    on_train: Callable[[], None] | None = None,
    **settings: Any,
) -> Tokenizer:
    """The tokenizer of a run: loaded from ``path`` (a file, or for ``hf`` a hub name), else
    trained on ``documents()`` (called only when needed) or found in ``cache_dir``.

    ``fingerprint`` names the training documents (see ``llm_lab.data.corpus.Corpus``); with
    ``cache_dir=None`` nothing is cached. ``on_train`` is called before a tokenizer is trained
    (to tell the user why the run pauses).
    """
    if kind not in KINDS:
        raise ArgumentError("kind", f"unknown tokenizer {kind!r}", f"use one of {', '.join(KINDS)}")
    if kind == "hf":
        if not path:
            raise ArgumentError(
                "path", "a Hugging Face tokenizer needs a tokenizer.json or a hub name", "set it"
            )
        try:  # a file or a hub name: the setting to change is what the user needs named
            return HFTokenizer(path)
        except DataError as err:
            raise ArgumentError(
                "path", str(err), "give a tokenizer.json file; a hub name needs the internet"
            ) from None
    if path:
        if kind != "bpe":
            raise ArgumentError("path", f"a {kind} tokenizer is trained, not loaded", "use kind bpe or hf")
        return load_tokenizer(path)
    if cache_dir is None:
        return train_tokenizer(kind, documents(), **settings)
    folder = Path(cache_dir) / "tokenizers"
    name, key = cache_key(kind, settings, fingerprint), _entry_key(kind, settings, fingerprint)
    entry = folder / name
    cached, _ = _load_entry(entry, key)
    if cached is not None:
        return cached  # no lock, nothing written: a read-only cache serves too
    with exclusive(folder / f"{name}.lock"):
        cached, problem = _load_entry(entry, key)  # another process may have trained it meanwhile
        if cached is not None:
            return cached
        if problem is not None:
            _set_aside(entry, problem)
        if on_train is not None:
            on_train()
        tokenizer = train_tokenizer(kind, documents(), **settings)
        _save_entry(tokenizer, entry, key)
    return tokenizer

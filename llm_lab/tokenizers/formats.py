"""File formats of byte-level BPE: GPT-2's files, HF ``tokenizer.json`` and tiktoken's ranks.

A byte-level BPE tokenizer is fully described by a vocabulary ``{id: bytes}``, an ordered list of
merges ``[(bytes, bytes)]`` and its special tokens ``{str: id}``. The formats below differ only in
how they write tokens down: JSON cannot hold raw bytes, so GPT-2 (Radford et al. 2019, released
``encoder.py``) maps each of the 256 bytes to a printable Unicode character and writes a token as
the string of its bytes' characters (a space becomes ``Ġ``). HF `tokenizers` and the CS336
fixtures use the same mapping; tiktoken needs no mapping and takes ``{bytes: rank}`` directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from llm_lab.errors import DataError
from llm_lab.tokenizers.base import read_json

Vocab = dict[int, bytes]
Merges = list[tuple[bytes, bytes]]


def _gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte → character table.

    Printable Latin-1 bytes stand for themselves; the other 68 (control characters, space,
    DEL, the no-break and soft hyphens) are shifted to U+0100 onwards in byte order, so that
    every token prints as visible characters and no token contains whitespace.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for offset, b in enumerate(shifted):
        table[b] = chr(256 + offset)
    return table


BYTE_TO_CHAR: dict[int, str] = _gpt2_byte_chars()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}
# The order of the 256 single bytes in GPT-2's vocabulary (and in the CS336 and HF trained
# vocabularies): sorted by their printable character, i.e. printable bytes first.
GPT2_BYTE_ORDER: list[int] = sorted(range(256), key=lambda b: BYTE_TO_CHAR[b])


def token_to_str(token: bytes) -> str:
    """Write a token's bytes as GPT-2 printable characters (``b" the"`` → ``"Ġthe"``)."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def str_to_token(text: str, where: str = "token") -> bytes:
    """Inverse of :func:`token_to_str`; ``where`` names the file for the error message."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in text)
    except KeyError as e:
        raise DataError(f"{where}: {text!r} is not a GPT-2 byte-level token ({e})") from None


def read_gpt2_files(vocab_json: Path, merges_txt: Path) -> tuple[Vocab, Merges, dict[str, int]]:
    """Read GPT-2's ``encoder.json`` and ``vocab.bpe`` (here ``gpt2_vocab.json``/``gpt2_merges.txt``).

    Returns the byte vocabulary, the merges in rank order, and the entries of the JSON that are
    not byte-level tokens (``<|endoftext|>`` is written literally), which callers treat as
    special tokens when asked to.
    """
    vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
    encoder = read_json(vocab_json, "GPT-2's encoder.json")
    if not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values()):
        raise DataError(f"{vocab_json}: expected a JSON object mapping tokens to integer ids")
    vocab: Vocab = {}
    literal: dict[str, int] = {}
    for text, i in encoder.items():
        if all(c in CHAR_TO_BYTE for c in text):
            vocab[i] = str_to_token(text)
        else:
            literal[text] = i
    merges: Merges = []
    try:
        lines = merges_txt.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{merges_txt}: file not found") from None
    for number, line in enumerate(lines, start=1):
        if line.startswith("#version") or not line.strip():
            continue  # GPT-2's header line, and a trailing blank line
        parts = line.split(" ")
        if len(parts) != 2:
            raise DataError(f"{merges_txt}:{number}: expected two tokens, got {line!r}")
        where = f"{merges_txt}:{number}"
        merges.append((str_to_token(parts[0], where), str_to_token(parts[1], where)))
    return vocab, merges, literal


def hf_tokenizer_json(vocab: Vocab, merges: Merges, special_tokens: Mapping[str, int]) -> str:
    """A HF `tokenizers` ``tokenizer.json`` for a byte-level BPE (format of tokenizers ≥ 0.20).

    The ByteLevel pre-tokenizer splits with the GPT-2 pattern and maps bytes to characters; the
    BPE model holds vocabulary and merges; special tokens are *added tokens*, matched on the raw
    text before pre-tokenization, which is exactly what :class:`BPETokenizer` does.
    """
    # Special tokens also sit in the model's vocabulary, under their own text: HF gives an added
    # token that the model lacks a fresh id, ignoring the "id" written for it.
    by_id = {i: s for s, i in special_tokens.items()}
    model_vocab = {by_id.get(i) or token_to_str(b): i for i, b in sorted(vocab.items())}
    added = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for s, i in sorted(special_tokens.items(), key=lambda item: item[1])
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            # HF would otherwise take a whole pre-token found in the vocabulary without merging,
            # which can differ from applying the merges in rank order.
            "ignore_merges": False,
            "vocab": model_vocab,
            "merges": [[token_to_str(a), token_to_str(b)] for a, b in merges],
        },
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def read_hf_tokenizer_json(path: Path) -> tuple[Vocab, Merges, dict[str, int]]:
    """Read a byte-level BPE ``tokenizer.json`` (written by us or by HF `tokenizers`)."""
    path = Path(path)
    document = read_json(path, "a byte-level BPE tokenizer.json")
    try:
        model = document["model"]
        if model.get("type", "BPE") != "BPE":
            raise DataError(f"{path}: model type {model['type']!r} is not BPE")
        if (document.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
            raise DataError(f"{path}: only a ByteLevel pre-tokenizer is supported")
        specials = {t["content"]: int(t["id"]) for t in document.get("added_tokens", [])}
        vocab = {
            int(i): s.encode("utf-8") if s in specials else str_to_token(s, str(path))
            for s, i in model["vocab"].items()
        }
        vocab.update({i: s.encode("utf-8") for s, i in specials.items()})
        # Merges are written as ["a", "b"] (tokenizers ≥ 0.20) or "a b" (older files).
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        merges = [(str_to_token(a, str(path)), str_to_token(b, str(path))) for a, b in pairs]
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: not a byte-level BPE tokenizer.json ({e!r})") from None
    return vocab, merges, specials


def tiktoken_ranks(vocab: Vocab, special_ids: set[int]) -> dict[bytes, int]:
    """tiktoken's ``mergeable_ranks``: each ordinary token's bytes → its id.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank; using ids as
    ranks is right because every merged token gets a larger id than its parts' merges.
    """
    ranks: dict[bytes, int] = {}
    for i, token in sorted(vocab.items()):
        if i not in special_ids:
            ranks.setdefault(token, i)
    return ranks

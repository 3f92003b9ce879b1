"""One interface for every tokenizer: encode/decode, vocab_size, token ↔ id, save/load, bad files."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFLibTokenizer
from tokenizers import models

from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers import (
    BPETokenizer,
    FastBPETokenizer,
    HFTokenizer,
    SimpleTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_hash,
)

EOT = "<|endoftext|>"
TEXT = f"The quick brown fox{EOT} jumps over the lazy dog. Zoë's café costs 12,50 €; 東京 🙂 end.\n"


def builtin_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)][:40]


@cache
def fast_bpe() -> FastBPETokenizer:
    return FastBPETokenizer.train(500, documents=builtin_docs(), special_tokens=[EOT, "<|pad|>"])


def make(kind: str, tmp_path: Path) -> Tokenizer:
    """One tokenizer of each class, all learned from the built-in corpus."""
    if kind == "simple":
        return SimpleTokenizer.from_corpus(builtin_docs())
    if kind == "bpe":
        return BPETokenizer(fast_bpe().vocab, fast_bpe().merges, list(fast_bpe().special_tokens))
    if kind == "fast_bpe":
        return fast_bpe()
    return HFTokenizer(fast_bpe().save(tmp_path / "for_hf.json"))


KINDS = ["simple", "bpe", "fast_bpe", "hf"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_tokenizer_offers_the_interface_and_survives_a_file(tmp_path: Path, kind: str):
    tok = make(kind, tmp_path)
    assert isinstance(tok, Tokenizer)
    back = type(tok).load(tok.save(tmp_path / "saved" / "tokenizer.json"))
    assert back.encode(TEXT) == tok.encode(TEXT) and back.vocab_size == tok.vocab_size
    # Any byte-level BPE file, HF's included, loads into the lab's own BPE.
    expected = SimpleTokenizer if kind == "simple" else FastBPETokenizer
    assert type(load_tokenizer(tmp_path / "saved" / "tokenizer.json")) is expected
    ids = list(range(tok.vocab_size))
    assert [tok.token_to_id(tok.id_to_token(i)) for i in ids] == ids
    assert tok.token_to_id("no such token, surely") is None
    if kind != "simple":  # words lose their spacing; byte-level BPE loses nothing
        assert tok.decode(tok.encode(TEXT)) == TEXT


def test_bpe_token_names_are_those_of_hf_tokenizers(tmp_path: Path):
    tok = fast_bpe()
    hf = HFLibTokenizer.from_file(str(tok.save(tmp_path / "tokenizer.json")))
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == [
        hf.id_to_token(i) for i in range(tok.vocab_size)
    ]
    assert all(tok.token_to_id(name) == i for name, i in hf.get_vocab().items())
    assert tok.id_to_token(tok.encode(" the")[0]) == "Ġthe"


def test_tokenizer_hash_follows_the_ids_not_the_object(tmp_path: Path):
    tok = fast_bpe()
    same = BPETokenizer.load(tok.save(tmp_path / "tokenizer.json"))
    fewer_merges = FastBPETokenizer(
        {i: b for i, b in tok.vocab.items() if i != max(tok.vocab)},  # specials first: the last id is a merge
        tok.merges[:-1],
        list(tok.special_tokens),
    )
    assert tokenizer_hash(same) == tokenizer_hash(tok) != tokenizer_hash(fewer_merges)
    assert len({tokenizer_hash(make(kind, tmp_path)) for kind in ("simple", "fast_bpe")}) == 2


# --------------------------------------------------------------------------------- bad files
def _bad_file(how: str, tmp_path: Path) -> Path:
    path = tmp_path / "bad_tokenizer.json"
    good = fast_bpe().save(tmp_path / "good.json").read_bytes()
    if how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not a tokenizer":
        path.write_text(json.dumps({"weights": [1, 2, 3]}))
    elif how == "folder":
        path.mkdir()
    elif how == "missing":
        pass
    return path


LOADERS: dict[str, Callable[[Path], object]] = {
    "SimpleTokenizer": SimpleTokenizer.load,
    "BPETokenizer": BPETokenizer.load,
    "FastBPETokenizer": FastBPETokenizer.load,
    "HFTokenizer": HFTokenizer.load,
    "load_tokenizer": load_tokenizer,
}


@pytest.mark.parametrize("how", ["truncated", "binary", "empty", "not a tokenizer", "folder", "missing"])
@pytest.mark.parametrize("loader", LOADERS)
def test_an_unreadable_file_is_a_data_error_naming_it(tmp_path: Path, loader: str, how: str):
    path = _bad_file(how, tmp_path)
    with pytest.raises(DataError, match="bad_tokenizer.json") as err:
        LOADERS[loader](path)
    if how == "not a tokenizer" and loader == "load_tokenizer":  # said as such, not as a parse error
        assert "not a tokenizer file" in str(err.value)


@pytest.mark.parametrize(
    ("loader", "other"),
    [
        ("SimpleTokenizer", "fast_bpe"),
        ("BPETokenizer", "simple"),
        ("FastBPETokenizer", "simple"),
        ("HFTokenizer", "simple"),
        ("BPETokenizer", "word_level"),
    ],
)
def test_a_file_of_another_kind_is_a_data_error_naming_it(tmp_path: Path, loader: str, other: str):
    path = tmp_path / "other_kind.json"
    if other == "word_level":  # a HF tokenizer that is not byte-level BPE
        HFLibTokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    else:
        make(other, tmp_path).save(path)
    with pytest.raises(DataError, match="other_kind.json"):
        LOADERS[loader](path)


def test_load_tokenizer_hands_other_hf_files_to_hf(tmp_path: Path):
    path = tmp_path / "word_level.json"
    HFLibTokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    tok = load_tokenizer(path)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == 2


def test_a_hub_name_that_cannot_be_fetched_names_the_path_setting(monkeypatch: pytest.MonkeyPatch):
    """Offline, a hub name fails inside the tokenizers library (after its retries): the setting to
    change is named, with the library's reason."""
    import tokenizers

    from llm_lab.tokenizers.build import build_tokenizer

    def offline(name: str) -> None:
        raise Exception(f"cannot find {name} in the local cache; check your connection")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", offline)
    with pytest.raises(ArgumentError, match=r"^path: some/name: cannot be read .*check your connection"):
        build_tokenizer("hf", list, "fingerprint", path="some/name")


def test_a_folder_or_a_missing_file_as_a_tokenizer_path_says_which(tmp_path: Path):
    """Not handed to the hub (whose reply is about repository ids): a folder and a missing file are
    named as such, before any network."""
    (tmp_path / "run").mkdir()
    fast_bpe().save(tmp_path / "run" / "tokenizer.json")
    with pytest.raises(
        DataError, match=r"run: is a folder, not a tokenizer.json file; .*run/tokenizer.json is in it$"
    ):
        HFTokenizer(tmp_path / "run")
    for missing in (tmp_path / "gone.json", "./gone"):
        with pytest.raises(DataError, match=r"gone(\.json)?: no such file$"):
            HFTokenizer(missing)


def test_a_tokenizer_file_that_cannot_be_read_names_the_path_setting(tmp_path: Path):
    from llm_lab.tokenizers.build import build_tokenizer

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(
        ArgumentError, match=r"^path: .*bad.json: cannot be read as a Hugging Face tokenizer.json"
    ):
        build_tokenizer("hf", list, "fingerprint", path=str(tmp_path / "bad.json"))

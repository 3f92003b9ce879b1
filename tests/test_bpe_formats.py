"""BPE file formats: HF tokenizer.json both ways, GPT-2's files, tiktoken ranks, corrupt files."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from conftest import FIXTURES, needs_fixtures
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from llm_lab.errors import DataError
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from llm_lab.tokenizers.compiled import tiktoken_encoding
from llm_lab.tokenizers.formats import BYTE_TO_CHAR, read_gpt2_files, tiktoken_ranks

EOT = "<|endoftext|>"
TEXT = (
    f"The quick brown fox{EOT} jumps over the lazy dog.  \n\n  Zoë's café costs 12,50 €. "
    f"東京 🙂👍🏽 tabs\t\tand   spaces {EOT}{EOT}<|pad|> end\n"
)


def builtin_text() -> str:
    from pydoc_data.topics import topics

    return " ".join(topics[k] for k in sorted(topics))


@cache
def trained() -> FastBPETokenizer:
    return FastBPETokenizer.train(600, text=builtin_text()[:100_000], special_tokens=[EOT, "<|pad|>"])


def test_byte_to_char_table_equals_gpt2s():
    assert bytes_to_unicode() == BYTE_TO_CHAR


def test_saved_tokenizer_json_gives_our_ids_in_hf(tmp_path: Path):
    tok = trained()
    hf = Tokenizer.from_file(str(tok.save(tmp_path / "run" / "tokenizer.json")))
    text = builtin_text()[100_000:200_000] + TEXT
    ids = tok.encode(text)
    assert hf.encode(text).ids == ids
    assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids) == text
    assert hf.get_vocab_size() == len(tok.vocab)


def test_save_then_load_restores_the_tokenizer(tmp_path: Path):
    tok = trained()
    back = FastBPETokenizer.load(tok.save(tmp_path / "tokenizer.json"))
    assert (back.vocab, back.merges, back.special_tokens) == (tok.vocab, tok.merges, tok.special_tokens)


def test_old_style_string_merges_are_read_like_hf(tmp_path: Path):
    path = trained().save(tmp_path / "tokenizer.json")
    document = json.loads(path.read_text("utf-8"))
    document["model"]["merges"] = [" ".join(pair) for pair in document["model"]["merges"]]
    path.write_text(json.dumps(document), encoding="utf-8")
    ours, hf = FastBPETokenizer.load(path), Tokenizer.from_file(str(path))
    assert ours.merges == trained().merges
    assert ours.encode(TEXT) == hf.encode(TEXT).ids


@needs_fixtures()
def test_gpt2_files_give_the_ids_of_hf_gpt2_loader():
    ref = Tokenizer(
        models.BPE.from_file(str(FIXTURES / "gpt2_vocab.json"), str(FIXTURES / "gpt2_merges.txt"))
    )
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.add_special_tokens([EOT])
    ours = FastBPETokenizer.from_gpt2_files(
        FIXTURES / "gpt2_vocab.json", FIXTURES / "gpt2_merges.txt", special_tokens=[EOT]
    )
    assert len(ours.vocab) == ref.get_vocab_size() == 50257
    assert ours.special_tokens == {EOT: 50256}
    text = (FIXTURES / "tinystories_sample.txt").read_text("utf-8") + TEXT
    assert ours.encode(text) == ref.encode(text).ids


@needs_fixtures()
def test_gpt2_saved_as_tokenizer_json_keeps_its_ids(tmp_path: Path):
    ours = FastBPETokenizer.from_gpt2_files(
        FIXTURES / "gpt2_vocab.json", FIXTURES / "gpt2_merges.txt", special_tokens=[EOT]
    )
    hf = Tokenizer.from_file(str(ours.save(tmp_path / "gpt2.json")))
    assert hf.encode(TEXT).ids == ours.encode(TEXT)


def test_tiktoken_ranks_are_the_ordinary_tokens():
    tok = trained()
    special_ids = set(tok.special_tokens.values())
    assert tiktoken_ranks(tok.vocab, special_ids) == {
        b: i for i, b in tok.vocab.items() if i not in special_ids
    }
    encoding = tiktoken_encoding(tok)
    assert encoding.n_vocab == len(tok.vocab)
    assert encoding.decode_single_token_bytes(tok.special_tokens[EOT]) == EOT.encode()


def test_truncated_tokenizer_json_is_a_data_error_naming_the_file(tmp_path: Path):
    path = trained().save(tmp_path / "tokenizer.json")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="tokenizer.json"):
        BPETokenizer.load(path)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.pop("model"),
        lambda d: d["model"].update(type="WordPiece"),
        lambda d: d["model"]["merges"].append(["Ġnot", "Ġthere"]),
        lambda d: d["model"]["vocab"].update({"not\u0000bytes": 10_000}),
        lambda d: d["model"]["vocab"].pop("a"),
        lambda d: d.update(added_tokens=[{"id": 0}]),
    ],
)
def test_corrupt_tokenizer_json_is_a_data_error_naming_the_file(tmp_path: Path, corrupt):
    path = trained().save(tmp_path / "tokenizer.json")
    document = json.loads(path.read_text("utf-8"))
    corrupt(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError, match="tokenizer.json"):
        BPETokenizer.load(path)


def test_missing_file_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="nowhere.json"):
        BPETokenizer.load(tmp_path / "nowhere.json")


def test_bad_gpt2_merges_line_is_a_data_error_naming_file_and_line(tmp_path: Path):
    (tmp_path / "vocab.json").write_text(json.dumps({BYTE_TO_CHAR[b]: b for b in range(256)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\nthree tokens here\n")
    with pytest.raises(DataError, match=r"merges.txt:3"):
        read_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")

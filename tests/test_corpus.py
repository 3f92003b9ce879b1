from pathlib import Path

import pytest

from llm_lab.data.corpus import builtin_corpus, load_corpus, split_documents
from llm_lab.errors import ArgumentError, DataError


def test_builtin_corpus_is_real_english_prose():
    docs = builtin_corpus()
    text = " ".join(docs)
    assert len(docs) > 50 and len(text.split()) > 50_000
    for word in (" the ", " and ", " of "):
        assert word in text


def test_reads_a_file_and_a_folder(tmp_path: Path):
    (tmp_path / "a.txt").write_text("first document", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second one", encoding="utf-8")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert load_corpus(tmp_path / "a.txt") == ["first document"]
    assert load_corpus(tmp_path) == ["first document", "second one"]


def test_hf_text_builder_reads_the_same_documents_as_local_files(tmp_path: Path):
    f = tmp_path / "lines.txt"
    f.write_text("alpha beta\ngamma delta\n", encoding="utf-8")
    docs = load_corpus(hf_dataset="text", hf_data_files=str(f))
    assert docs == ["alpha beta", "gamma delta"]


def test_missing_path_names_the_argument(tmp_path: Path):
    with pytest.raises(ArgumentError, match="^path: .*does not exist"):
        load_corpus(tmp_path / "nope.txt")


def test_non_utf8_file_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus(f)


def test_empty_corpus_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "empty.txt"
    f.write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_corpus(f)


def test_split_is_disjoint_complete_and_seeded():
    docs = [f"doc {i}" for i in range(100)]
    train, val = split_documents(docs, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == sorted(docs)
    assert not set(train) & set(val)
    assert split_documents(docs, 0.1, seed=3) == (train, val)
    assert split_documents(docs, 0.1, seed=4) != (train, val)


def test_single_document_is_split_at_a_line():
    text = "\n".join(f"line {i}" for i in range(100))
    (train,), (val,) = split_documents([text], 0.2)
    assert train + val == text and val.startswith("\n") and 0.15 < len(val) / len(text) < 0.25


def test_bad_val_fraction():
    with pytest.raises(ArgumentError, match="^val_fraction"):
        split_documents(["a", "b"], 0.0)

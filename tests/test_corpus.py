"""Where text comes from: the built-in corpus, files and folders, HF datasets (streamed too), and a
split by document that is stable, disjoint and complete without holding the corpus in memory."""

import logging
import os
from pathlib import Path

import pytest
from conftest import TINY_GPT, run_train

from llm_lab.data.corpus import Corpus, assign, builtin_corpus
from llm_lab.data.docs_topics import docs_topics, split_by_module
from llm_lab.errors import ArgumentError, DataError


def test_builtin_corpus_is_real_english_prose():
    docs = builtin_corpus()
    text = " ".join(docs)
    assert len(docs) > 50 and len(text.split()) > 50_000
    for word in (" the ", " and ", " of "):
        assert word in text


def test_docstrings_add_the_classifiers_training_modules_and_no_other(tmp_path: Path):
    """Task-adaptive pretraining reads every training module of docs_topics, once, after the
    built-in corpus; no paragraph of a validation or test module, which the classifier is scored on."""
    split = split_by_module(docs_topics())
    with_docstrings = list(Corpus(docstrings=True).documents())
    topics = builtin_corpus()
    assert with_docstrings[: len(topics)] == topics
    added = with_docstrings[len(topics) :]
    assert len(added) == len({e.module for e in split["train"]})
    paragraphs = {paragraph for document in added for paragraph in document.split("\n\n")}
    assert paragraphs == {e.text for e in split["train"]}
    assert not paragraphs & {e.text for e in split["val"] + split["test"]}
    assert Corpus(docstrings=True).fingerprint() != Corpus().fingerprint()  # a tokenizer of its own
    with pytest.raises(ArgumentError, match="docstrings"):
        Corpus(path=str(tmp_path), docstrings=True)


def test_reads_a_file_a_folder_and_documents_separated_by_endoftext(tmp_path: Path):
    (tmp_path / "a.txt").write_text("first document", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second one<|endoftext|>third<|endoftext|>  ", encoding="utf-8")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert list(Corpus(path=str(tmp_path / "a.txt")).documents()) == ["first document"]
    assert list(Corpus(path=str(tmp_path)).documents()) == ["first document", "second one", "third"]
    assert list(Corpus(path=str(tmp_path), max_documents=2).documents()) == ["first document", "second one"]


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_text_builder_reads_the_same_documents_as_local_files(tmp_path: Path, streaming: bool):
    f = tmp_path / "lines.txt"
    f.write_text("alpha beta\ngamma delta\n", encoding="utf-8")
    corpus = Corpus(hf_dataset="text", hf_data_files=str(f), hf_streaming=streaming)
    assert list(corpus.documents()) == ["alpha beta", "gamma delta"]


def test_a_folder_corpus_leaves_out_run_folders_and_hidden_folders(tmp_path: Path):
    """A run written below the corpus folder (its vectors.txt is numbers) and a .git folder are not
    text to learn from; a plain subfolder is."""
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("alpha beta", encoding="utf-8")
    run = tmp_path / "runs" / "cbow"
    (run / ".hydra").mkdir(parents=True)
    (run / "vectors.txt").write_text("2 1\nalpha 0.5\nbeta 0.25\n", encoding="utf-8")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "notes.txt").write_text("inside the run too", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "description.txt").write_text("not the corpus", encoding="utf-8")
    assert list(Corpus(path=str(tmp_path)).documents()) == ["alpha beta"]


def test_a_run_folder_inside_the_corpus_folder_is_refused(tmp_path: Path):
    (tmp_path / "a.txt").write_text(" ".join(builtin_corpus()[:5]), encoding="utf-8")
    proc = run_train(
        "experiment=cbow", "debug=fast", f"corpus.path={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.strip().splitlines()[-1].startswith(f"error: hydra.run.dir: {tmp_path / 'run'} is inside")
    )


@pytest.mark.parametrize("streaming", [False, True])
def test_a_dataset_that_cannot_be_read_names_hf_dataset(tmp_path: Path, streaming: bool):
    """What load_dataset raises (no such split here; offline, a hub name the same way) is one
    ArgumentError naming hf_dataset with datasets' own reason, streamed or not."""
    (tmp_path / "a.txt").write_text("some text\n", encoding="utf-8")
    corpus = Corpus(
        hf_dataset="text",
        hf_data_files=str(tmp_path / "a.txt"),
        hf_split="validation",
        hf_streaming=streaming,
    )
    with pytest.raises(ArgumentError, match=r"^hf_dataset: 'text' could not be read \(.*validation"):
        list(corpus.documents())


def test_a_path_that_is_no_file_nor_folder_is_named(tmp_path: Path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        with pytest.raises(ArgumentError, match=f"^path: {path} is neither a regular file nor a folder"):
            list(Corpus(path=str(path)).documents())


def test_missing_path_names_the_argument(tmp_path: Path):
    with pytest.raises(ArgumentError, match="^path: .*does not exist"):
        Corpus(path=str(tmp_path / "nope.txt"))


def test_non_utf8_file_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        list(Corpus(path=str(f)).documents())


def test_a_utf8_byte_order_mark_is_dropped(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes("\ufeffWindows Notepad wrote this".encode())
    (tmp_path / "b.txt").write_bytes("second file<|endoftext|>\ufeffthird".encode("utf-8-sig"))
    documents = list(Corpus(path=str(tmp_path)).documents())
    # Only the mark that opens a file goes: one inside the text is a character of it.
    assert documents == ["Windows Notepad wrote this", "second file", "\ufeffthird"]


@pytest.mark.parametrize(
    ("text", "encoding", "guess"),
    [
        ("Привет, как дела? Это тест.\n", "cp1251", "<its encoding>"),
        ("日本語のテキストです。\n", "shift_jis", "<its encoding>"),
        ("Ça coûte très cher, hélas.\n", "latin-1", "CP1252"),
    ],
    ids=["cyrillic", "japanese", "french"],
)
def test_a_non_utf8_file_gets_the_iconv_command_for_its_likely_encoding(
    tmp_path: Path, text: str, encoding: str, guess: str
):
    f = tmp_path / "book.txt"
    f.write_bytes(text.encode(encoding) * 10)
    with pytest.raises(DataError) as info:
        list(Corpus(path=str(f)).documents())
    # A Western text is mostly ASCII; Cyrillic or Japanese in a code page also decodes as CP1252,
    # but must not be called that.
    assert str(info.value).startswith(f"{f}: not UTF-8 text (byte 0x")
    assert f"iconv -f {guess} -t UTF-8 {f} > {f}.utf8.txt" in str(info.value)


def test_empty_corpus_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "empty.txt"
    f.write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        list(Corpus(path=str(f)).documents())


def test_split_is_disjoint_complete_stable_and_seeded():
    docs = [f"doc {i}" for i in range(2000)]
    split = list(assign(docs, 0.1, seed=3))
    val = [d for v, d in split if v]
    assert [d for _, d in split] == docs  # every document once, in order
    # Each document is a coin with p=0.1: 2000 of them give 200 ± 13 (one standard deviation).
    assert 150 < len(val) < 250
    assert list(assign(docs, 0.1, seed=3)) == split  # the same on every pass
    assert list(assign(docs, 0.1, seed=4)) != split
    # A document's side depends on its position and the seed only: more documents after it
    # do not move it (the split of a growing stream is stable).
    assert list(assign(docs[:500], 0.1, seed=3))[:499] == split[:499]


def test_every_split_has_a_validation_side():
    (only,) = [d for v, d in assign(["a", "b"], 0.01, seed=0) if v]  # no coin came up: the last one
    assert only == "b"
    text = "\n".join(f"line {i}" for i in range(100))
    (train,), (val,) = ([d for v, d in assign([text], 0.2, 0) if v is side] for side in (False, True))
    assert train + val == text and val.startswith("\n") and 0.15 < len(val) / len(text) < 0.25


def test_a_validation_share_far_above_val_fraction_is_warned_once(tmp_path: Path, caplog):
    for i in range(3):
        (tmp_path / f"chapter{i}.txt").write_text(f"chapter {i} " * 50, encoding="utf-8")
    corpus = Corpus(path=str(tmp_path), val_fraction=0.05)
    with caplog.at_level(logging.WARNING, logger="llm_lab.data.corpus"):
        assert len(corpus.load().val) == 1
        list(corpus.train_documents()), list(corpus.val_documents())  # a run's other passes
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert "1 of 3 documents (33%)" in message and "0.05" in message and "<|endoftext|>" in message


@pytest.mark.parametrize("documents", [1, 400], ids=["one-document", "many-documents"])
def test_a_split_near_val_fraction_is_not_warned_about(tmp_path: Path, caplog, documents: int):
    # One document is cut by characters at val_fraction; 400 put 10% ± 1.5% in validation.
    (tmp_path / "book.txt").write_text("<|endoftext|>".join(f"line {i}\n" * 20 for i in range(documents)))
    corpus = Corpus(path=str(tmp_path / "book.txt"), val_fraction=0.1)
    with caplog.at_level(logging.WARNING, logger="llm_lab.data.corpus"):
        split = corpus.load()
    assert split.val and not caplog.records


def test_train_and_val_streams_and_the_loaded_split_agree():
    corpus = Corpus(max_documents=40, seed=42)
    split = corpus.load()
    assert split.train == list(corpus.train_documents()) and split.val == list(corpus.val_documents())
    assert sorted(split.train + split.val) == sorted(corpus.documents()) and split.val


def test_fingerprint_names_the_text_and_the_split(tmp_path: Path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    before = Corpus(path=str(f)).fingerprint()
    assert Corpus(path=str(f)).fingerprint() == before
    assert Corpus(path=str(f), seed=1).fingerprint() != before
    f.write_text("one two")  # an edited file is another corpus
    assert Corpus(path=str(f)).fingerprint() != before


def test_bad_val_fraction():
    with pytest.raises(ArgumentError, match="^val_fraction"):
        Corpus(val_fraction=0.0)


def test_a_split_that_leaves_no_training_document_names_val_fraction(tmp_path: Path):
    for i in range(3):
        (tmp_path / f"chapter{i}.txt").write_text(f"chapter {i} " * 50, encoding="utf-8")
    corpus = Corpus(path=str(tmp_path), val_fraction=0.999999)  # every document draws validation
    with pytest.raises(ArgumentError, match=r"^val_fraction: all 3 documents went to validation.*\(lower"):
        corpus.load()
    with pytest.raises(ArgumentError, match="^val_fraction: all 3"):
        list(corpus.train_documents())  # the streamed passes say it too, at the end of the stream


def test_a_run_on_a_few_documents_warns_once_about_the_validation_share(tmp_path: Path):
    corpus = tmp_path / "my_texts"
    corpus.mkdir()
    for i, doc in enumerate(builtin_corpus()[:3]):
        (corpus / f"doc{i}.txt").write_text(doc, encoding="utf-8")
    # A GPT run reads the corpus three times: to train its tokenizer, to prepare each split.
    proc = run_train(
        *TINY_GPT,
        "trainer.max_steps=1",
        f"corpus.path={corpus}",
        "corpus.val_fraction=0.05",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stdout.splitlines() if "validation got" in line]
    assert len(warned) == 1 and "of 3 documents" in warned[0], proc.stdout[-3000:]

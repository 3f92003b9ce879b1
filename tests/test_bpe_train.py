"""BPE training: equal to the CS336 reference, to a brute-force recount, and to HF's layout."""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import FIXTURES, needs_fixtures
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from llm_lab.errors import ConfigError, DataError
from llm_lab.tokenizers import pretokenize
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.formats import token_to_str
from llm_lab.tokenizers.pretokenize import chunk_text, count_pretokens, count_source

EOT = "<|endoftext|>"


def brute_force_merges(counts: Counter[str], n_merges: int) -> list[tuple[bytes, bytes]]:
    """BPE by its definition: recount every pair of every word before each merge."""
    words = Counter({tuple(bytes([b]) for b in w.encode()): c for w, c in counts.items()})
    merges = []
    for _ in range(n_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, c in words.items():
            for pair in pairwise(word):
                pairs[pair] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # ties: greatest pair of byte strings
        merges.append(best)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, c in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return merges


@needs_fixtures()
def test_merges_and_vocab_equal_the_cs336_reference():
    tok = BPETokenizer.train(FIXTURES / "corpus.en", 500, special_tokens=[EOT])
    bytes_of = {c: b for b, c in _gpt2_chars().items()}

    def decode(s: str) -> bytes:
        return bytes(bytes_of[c] for c in s)

    lines = (FIXTURES / "train-bpe-reference-merges.txt").read_text(encoding="utf-8").splitlines()
    assert tok.merges == [tuple(decode(t) for t in line.split(" ")) for line in lines]
    reference = json.loads((FIXTURES / "train-bpe-reference-vocab.json").read_text("utf-8"))
    expected = {i: (s.encode() if s == EOT else decode(s)) for s, i in reference.items()}
    assert tok.vocab == expected


def _gpt2_chars() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


small_docs = st.lists(st.text(alphabet="ab c\n'é", max_size=40), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(docs=small_docs, n_merges=st.integers(0, 30))
def test_incremental_counts_equal_a_full_recount(docs, n_merges):
    counts = count_source(docs, [], num_workers=1)
    if not counts:
        with pytest.raises(DataError):
            BPETokenizer.train(docs, 256 + n_merges, num_workers=1)
        return
    tok = BPETokenizer.train(docs, 256 + n_merges, num_workers=1)
    assert tok.merges == brute_force_merges(counts, n_merges)


def test_ties_go_to_the_lexicographically_greatest_pair():
    # (a,b) and (c,d) both occur once; CS336 takes the greater pair of byte strings first.
    tok = BPETokenizer.train(["ab", "cd"], 258)
    assert tok.merges == [(b"c", b"d"), (b"a", b"b")]


def test_vocab_layout_equals_hf_trainer():
    """HF's ByteLevel trainer also puts specials first and bytes in GPT-2 order."""
    text = "low lower lowest newer wider " * 50
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(
        [text],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=[EOT, "<pad>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    ours = BPETokenizer.train(text, 300, special_tokens=[EOT, "<pad>"])
    hf_vocab = {i: s for s, i in hf.get_vocab().items()}
    ours_as_str = [ours.vocab[i].decode() if i < 2 else token_to_str(ours.vocab[i]) for i in range(258)]
    assert ours_as_str == [hf_vocab[i] for i in range(258)]


def test_special_tokens_are_never_merged_and_split_documents():
    text = f"hello{EOT}hello{EOT}{EOT}world{EOT}"
    tok = BPETokenizer.train(text * 20, 300, special_tokens=[EOT])
    assert tok.vocab[0] == EOT.encode()
    assert all(b"<|" not in a + b and b"|>" not in a + b for a, b in tok.merges)
    assert count_pretokens(text, [EOT]) == Counter(["hello", "hello", "world"])


def test_pretokens_equal_hf_byte_level_pretokenizer():
    text = "Hello  world's 123 4567\n\n  x\t\ty  ... naïve 東京 🙂!!  \n"
    ours = Counter(token_to_str(p.encode()) for p in count_pretokens(text).elements())
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    assert ours == Counter(piece for piece, _ in hf.pre_tokenize_str(text))


@settings(max_examples=80, deadline=None)
@given(
    parts=st.lists(st.sampled_from(["a", " ", "\n", "\t", "é", "1", "'s", EOT, "<|", "\n!"]), max_size=40),
    n=st.integers(1, 6),
    specials=st.booleans(),
)
def test_chunks_are_cut_at_pre_token_boundaries(parts, n, specials):
    text = "".join(parts)
    special_tokens = [EOT] if specials else []
    total = Counter()
    for chunk in chunk_text(text, n, special_tokens):
        total.update(count_pretokens(chunk, special_tokens))
    assert "".join(chunk_text(text, n, special_tokens)) == text
    assert total == count_pretokens(text, special_tokens)


def _noisy_text(seed: int, n: int) -> str:
    rng = random.Random(seed)
    parts = ["the", " cat", "  ", "\n", "\n\n", " 42", "é", "!", "\t", EOT, "'s", "\nX"]
    return "".join(rng.choice(parts) for _ in range(n))


@pytest.mark.parametrize("specials", [[EOT], []])
def test_parallel_counting_equals_serial(tmp_path: Path, monkeypatch, specials):
    monkeypatch.setattr(pretokenize, "PARALLEL_MIN_CHARS", 1000)
    text = _noisy_text(0, 20_000)
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    serial = count_pretokens(text, specials)
    assert count_source(text, specials, num_workers=2) == serial
    assert count_source(path, specials, num_workers=2) == serial
    assert len(pretokenize.file_chunk_offsets(path, 4, specials)) > 2  # really cut


def test_vocab_size_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        BPETokenizer.train("some text", 256, special_tokens=[EOT])


@pytest.mark.parametrize("specials", [[""], [EOT, EOT], EOT])
def test_bad_special_tokens_are_a_config_error(specials):
    with pytest.raises(ConfigError, match="tokenizer.special_tokens"):
        BPETokenizer.train("some text", 300, special_tokens=specials)


@pytest.mark.parametrize("source", ["", [], [EOT, ""], Path("/nonexistent/corpus.txt")])
def test_empty_or_missing_corpus_is_a_data_error(source):
    with pytest.raises(DataError):
        BPETokenizer.train(source, 300, special_tokens=[EOT])


def test_non_utf8_file_is_a_data_error(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt"):
        BPETokenizer.train(path, 300)

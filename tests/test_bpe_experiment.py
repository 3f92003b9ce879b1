"""`python train.py experiment=bpe` end to end: tokenizer.json, TensorBoard scalars, max_steps, and
the console's lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tokenizers import Tokenizer

from llm_lab.data.corpus import Corpus
from llm_lab.tokenizers.bpe import BPETokenizer

TINY = ["experiment=bpe", "corpus.max_documents=40", "stage.merges_per_step=8", "stage.val_every_n_steps=2"]


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Each scalar's values in the order logged, without the copy of the final metrics that
    train.py writes at step 0 beside the hyperparameters."""
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        if len(events) > 1 and events[-1].step < events[-2].step:
            events = events[:-1]
        out[tag] = [e.value for e in events]
    return out


def test_bpe_experiment_writes_tokenizer_json_and_logs_growth_and_compression(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_train(*TINY, "tokenizer.vocab_size=320", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]

    # tokenizer.json: complete vocabulary, and HF gives the ids we give.
    ours = BPETokenizer.load(run_dir / "tokenizer.json")
    hf = Tokenizer.from_file(str(run_dir / "tokenizer.json"))
    assert len(ours.vocab) == hf.get_vocab_size() == 320
    val_docs = Corpus(max_documents=40, seed=42).load().val
    text = "".join(val_docs)
    assert ours.encode(text) == hf.encode(text).ids

    logged = scalars(run_dir)
    # Vocabulary growth: merges_per_step new tokens per step, up to the vocabulary size.
    sizes = logged["train/vocab_size"]
    assert sizes[0] == 1 + 256 + 8 and max(sizes) == 320
    assert all(0 < b - a <= 8 for a, b in zip(sizes, sizes[1:], strict=False))
    # Each merge is the most frequent pair left, so merge frequencies never rise.
    freqs = logged["train/merge_frequency"]
    assert all(b <= a for a, b in zip(freqs, freqs[1:], strict=False))
    assert logged["train/elapsed_sec"][-1] > 0
    # Compression of the validation text, as HF counts it with the final tokenizer.
    hf_bytes_per_token = len(text.encode()) / sum(len(hf.encode(d).ids) for d in val_docs)
    compression = logged["val/bytes_per_token"]
    assert len(compression) >= 3 and abs(compression[-1] - hf_bytes_per_token) < 1e-5
    assert all(b >= a for a, b in zip(compression, compression[1:], strict=False))


def test_max_steps_counts_blocks_of_merges(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_train(*TINY, "tokenizer.vocab_size=1000", "stage.max_steps=3", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(BPETokenizer.load(run_dir / "tokenizer.json").vocab) == 1 + 256 + 3 * 8
    assert "val/bytes_per_token" in scalars(run_dir)  # validated at the end too


def test_debug_fast_caps_the_stage_at_its_five_steps(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_train(*TINY, "tokenizer.vocab_size=1000", "debug=fast", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(BPETokenizer.load(run_dir / "tokenizer.json").vocab) == 1 + 256 + 5 * 8


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stage.max_steps=-5", "stage.max_steps: -5 < 1 (use -1 (until the vocabulary is complete) or 1"),
        ("stage.max_steps=0", "stage.max_steps: 0 < 1"),
        ("stage.max_steps=abc", "stage.max_steps: 'abc' is not an integer"),
        ("stage.val_every_n_steps=0", "stage.val_every_n_steps: 0 < 1 (use 1 or more)"),
        ("stage.merges_per_step=0", "stage.merges_per_step: 0 < 1"),
    ],
)
def test_bad_stage_settings_are_one_line_naming_the_key(override: str, expected: str, tmp_path: Path):
    result = run_train(*TINY, override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {expected}"), last
    assert (tmp_path / "FAILED").is_file() and not (tmp_path / "tokenizer.json").exists()


def test_too_small_vocabulary_is_a_one_line_config_error(tmp_path: Path):
    result = run_train("experiment=bpe", "tokenizer.vocab_size=100", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "tokenizer.vocab_size" in result.stderr and "Traceback" not in result.stderr


def test_the_console_shows_the_first_every_nth_and_last_step(tmp_path: Path):
    """Every step goes to the loggers; the console gets one line every progress_every_n_steps."""
    run_dir = tmp_path / "run"
    result = run_train(
        *TINY, "tokenizer.vocab_size=320", "progress_every_n_steps=3", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shown = [int(m) for m in re.findall(r"\] step (\d+) train/", result.stdout)]
    logged = len(scalars(run_dir)["train/vocab_size"])  # (320 - 257) / 8 merges: 8 steps
    assert logged == 8 and shown == [1, 3, 6, 8]

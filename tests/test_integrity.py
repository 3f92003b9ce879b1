"""Integrity (issue 21): resumes, caches, checkpoints, numbers and messages never give a silent wrong
result. Each test walks the path a user walks and asserts the behaviour (the rate trained at, the
bytes rebuilt, the file left alone, the exit code and key), not the wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import pasted, run_train

# The 2-D classifier: the fastest stage with an optimizer, a checkpoint and a run folder.
MLP = ["experiment=mlp", "logger=csv", "callbacks.decision_boundary=null", "trainer.log_every_n_steps=1"]


def saved(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def base_rates(state: dict) -> set[float]:
    return {g.get("initial_lr", g["lr"]) for g in state["optimizer_states"][0]["param_groups"]}


# ----------------------------------------------------------------------------------- 1. resume
def test_a_resume_trains_at_the_rate_of_its_command_line_and_says_so(tmp_path: Path):
    run = tmp_path / "run"
    first = run_train(*MLP, "trainer.max_steps=3", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    assert base_rates(saved(run)) == {0.01}
    again = run_train(
        *MLP, "trainer.max_steps=6", f"hydra.run.dir={run}", "ckpt_path=last", "optimizer.lr=0.5",
        "optimizer.betas=[0.8,0.99]",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    state = saved(run)
    assert state["global_step"] == 6
    groups = state["optimizer_states"][0]["param_groups"]
    assert base_rates(state) == {0.5} and {tuple(g["betas"]) for g in groups} == {(0.8, 0.99)}
    assert state["optimizer_states"][0]["state"], "the moments of the checkpoint were kept"
    said = again.stdout + again.stderr
    assert "optimizer.lr" in said and "optimizer.betas" in said and "optimizer.eps" not in said

    # Another optimizer: a fresh state of that kind, at the same step (no torch traceback).
    other = run_train(*MLP, "trainer.max_steps=8", f"hydra.run.dir={run}", "ckpt_path=last", "optimizer=sgd")
    assert other.returncode == 0, other.stderr[-2000:]
    state = saved(run)
    assert state["global_step"] == 8 and "momentum" in state["optimizer_states"][0]["param_groups"][0]
    assert "optimizer:" in other.stdout + other.stderr


def test_the_nan_guards_advice_followed_literally_resumes_at_the_lower_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from llm_lab.lit.classify import Classifier

    trained = Classifier.training_step

    def diverging(self, batch, batch_idx):  # what a too-high rate does, from step 5 on
        loss = trained(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= 5 else loss

    run = tmp_path / "run"
    monkeypatch.setattr(Classifier, "training_step", diverging)
    args = [*MLP, "trainer.max_steps=12", "callbacks.model_checkpoint.every_n_train_steps=2"]
    failed = run_train(*args, f"hydra.run.dir={run}")
    monkeypatch.undo()
    assert failed.returncode == 2
    named = [w for w in failed.stderr.split() if w.endswith(".ckpt")]
    assert named and all(Path(w).is_file() for w in named), failed.stderr  # only files that exist
    command = next(line.strip() for line in failed.stderr.splitlines() if line.strip().startswith("python "))
    assert "optimizer.lr=0.001" in command
    again = run_train(*pasted(command)[2:])
    assert again.returncode == 0, again.stderr[-2000:]
    state = saved(run)
    assert state["global_step"] == 12 and base_rates(state) == {0.001}


# ----------------------------------------------------------------------------- 2. caches
def _docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)[:10]]


DOCS = _docs()


@pytest.mark.parametrize("damage", ["truncated", "another size in the slot", "key of another corpus"])
def test_a_damaged_cached_tokenizer_is_moved_aside_and_trained_again(tmp_path: Path, damage: str, caplog):
    from llm_lab.tokenizers.build import build_tokenizer

    def build(vocab_size: int = 300, corpus: str = "docs"):
        trained: list[int] = []

        def documents():
            trained.append(1)
            return DOCS

        settings = {"vocab_size": vocab_size, "special_tokens": ["<|endoftext|>"]}
        return build_tokenizer("bpe", documents, corpus, cache_dir=tmp_path, **settings), trained

    first, _ = build()
    (entry,) = [p for p in (tmp_path / "tokenizers").iterdir() if p.is_dir()]
    written = (entry / "tokenizer.json").read_bytes()
    if damage == "truncated":
        (entry / "tokenizer.json").write_bytes(written[: len(written) // 2])
    elif damage == "another size in the slot":  # a valid tokenizer, of 280 tokens, where 300 belong
        other, _ = build(vocab_size=280)
        other.save(entry / "tokenizer.json")
    else:
        record = json.loads((entry / "key.json").read_text())
        (entry / "key.json").write_text(json.dumps(record | {"fingerprint": "another corpus"}))
    with caplog.at_level("WARNING"):
        again, trained = build()
    assert trained == [1] and again.vocab_size == first.vocab_size == 300  # trained once more
    assert (entry / "tokenizer.json").read_bytes() == written
    assert entry.with_name(f"{entry.name}.damaged").is_dir()
    assert [r for r in caplog.records if str(entry) in r.getMessage()]  # the one line names it
    third, trained = build()
    assert trained == [] and third.encode("the cat") == first.encode("the cat")  # and reused after


def test_a_read_only_tokenizer_cache_with_a_good_entry_is_used_without_writing(tmp_path: Path):
    from llm_lab.tokenizers.build import build_tokenizer

    settings = {"vocab_size": 300, "special_tokens": ["<|endoftext|>"]}
    first = build_tokenizer("bpe", lambda: DOCS, "docs", cache_dir=tmp_path, **settings)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    for path in [tmp_path, *before]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        again = build_tokenizer("bpe", list, "docs", cache_dir=tmp_path, **settings)  # list: no documents
    finally:
        for path in [tmp_path, *before]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert again.encode("the dog") == first.encode("the dog")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


# ------------------------------------------------------------------------------ 3. checkpoints
def test_an_unreadable_last_checkpoint_is_named_and_the_newest_readable_one_resumed(tmp_path: Path):
    run = tmp_path / "run"
    args = [*MLP, "callbacks.model_checkpoint.every_n_train_steps=2", f"hydra.run.dir={run}"]
    first = run_train(*args, "trainer.max_steps=5")
    assert first.returncode == 0, first.stderr[-2000:]
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a disk that filled up, a copy cut short
    again = run_train(*args, "trainer.max_steps=8", "ckpt_path=last")
    assert again.returncode == 0, again.stderr[-2000:]
    assert str(last) in again.stdout + again.stderr and "step4.ckpt" in again.stdout + again.stderr
    assert saved(run)["global_step"] == 8

    # Nothing readable left: refused, naming the file, not "stopped before its first step".
    for checkpoint in (run / "checkpoints").glob("*.ckpt"):
        checkpoint.write_bytes(b"not a checkpoint")
    refused = run_train(*args, "trainer.max_steps=10", "ckpt_path=last")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert ".ckpt" in refused.stderr.strip().splitlines()[-1]


def test_a_moved_run_folder_keeps_one_last_checkpoint_the_newest(tmp_path: Path):
    before, after = tmp_path / "before", tmp_path / "after"
    first = run_train(*MLP, "trainer.max_steps=3", f"hydra.run.dir={before}")
    assert first.returncode == 0, first.stderr[-2000:]
    before.rename(after)
    again = run_train(*MLP, "trainer.max_steps=6", f"hydra.run.dir={after}", f"ckpt_path={after}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert [p.name for p in (after / "checkpoints").glob("last*.ckpt")] == ["last.ckpt"]
    assert saved(after)["global_step"] == 6

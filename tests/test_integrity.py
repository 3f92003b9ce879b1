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
    changed = ["optimizer.lr=0.5", "optimizer.betas=[0.8,0.99]"]
    again = run_train(*MLP, "trainer.max_steps=6", f"hydra.run.dir={run}", "ckpt_path=last", *changed)
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


# --------------------------------------------------------------------------------- 5. sweeps
def rows(summary: Path) -> dict[str, str]:
    """The summary's rows: job folder → its metric cell."""
    lines = [line for line in summary.read_text().splitlines() if line.startswith("| ")][1:]
    return {cells[2].strip(): cells[-3].strip() for cells in (line.split("|") for line in lines)}


def interrupted_sweep(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    """``seed=1,2,3`` of the perceptron, Ctrl-C as job 2 starts: the command and what it printed."""
    import lightning

    seeded = lightning.seed_everything

    def ctrl_c_at_seed_3(seed=None, workers=False, verbose=True):
        if seed == 3:
            raise KeyboardInterrupt
        return seeded(seed, workers=workers, verbose=verbose)

    command = ["-m", "experiment=perceptron", "seed=1,2,3", "debug=fast", f"hydra.sweep.dir={sweep}"]
    monkeypatch.setattr(lightning, "seed_everything", ctrl_c_at_seed_3)
    stopped = run_train(*command)
    monkeypatch.undo()
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    so_far = rows(sweep / "summary.md")
    assert so_far["0"] and so_far["1"] and not so_far.get("2")  # job 2 not run: no value
    return command, stopped.stderr


def test_a_sweep_job_run_later_by_its_printed_command_updates_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sweep = tmp_path / "sweep"
    _, said = interrupted_sweep(sweep, monkeypatch)
    job_2 = next(line.strip() for line in said.splitlines() if line.strip().startswith("python "))
    finished = run_train(*pasted(job_2)[2:])
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert set(rows(sweep / "summary.md")) == {"0", "1", "2"} and rows(sweep / "summary.md")["2"]


def test_the_same_sweep_command_again_completes_a_half_finished_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sweep = tmp_path / "sweep"
    command, _ = interrupted_sweep(sweep, monkeypatch)
    kept = {job: (sweep / job / "metrics.json").stat().st_mtime_ns for job in ("0", "1")}
    again = run_train(*command)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {job: (sweep / job / "metrics.json").stat().st_mtime_ns for job in ("0", "1")} == kept
    assert all(rows(sweep / "summary.md")[job] for job in ("0", "1", "2"))


# ------------------------------------------------------------------- 4. numbers and outputs
def last_error(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr.strip().splitlines()[-1]


def test_hostile_numbers_are_refused_before_anything_runs_naming_every_key(tmp_path: Path):
    hostile = ["optimizer.lr=1e308", "model.net.dropout=nan", "optimizer.betas=[nan,0.9]"]
    proc = run_train(*MLP, *hostile, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for key in ("optimizer.lr", "model.net.dropout", "optimizer.betas"):
        assert f"error: {key}: " in proc.stderr, key
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 in a Hugging Face folder, with the tokenizer it reads."""
    from llm_lab.models.gpt import GPT, GPTConfig
    from llm_lab.models.hf import save_hf
    from llm_lab.tokenizers import FastBPETokenizer

    tokenizer = FastBPETokenizer.train(300, documents=DOCS, special_tokens=["<|endoftext|>"])
    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=32, n_layer=1, n_head=2, n_embd=16)
    save_hf(GPT(config), folder)
    tokenizer.save(folder / "tokenizer.json")
    return folder


def copy_with(folder: Path, to: Path, change) -> Path:
    """The HF folder with its weights changed by ``change(tensors)``."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, to)
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(to / "model.safetensors"))
    return to


def test_a_generation_larger_than_memory_is_refused_with_its_estimate(hf_folder: Path):
    line = last_error(run_train(f"hf_path={hf_folder}", "num_samples=100000000", script="generate.py"))
    assert line.startswith("error: num_samples: ") and "GiB" in line


@pytest.mark.parametrize(
    ("setting", "key"), [("temperature=nan", "temperature"), ("temperature=1e-40", "temperature")]
)
def test_sampling_settings_that_would_make_nan_are_refused_by_key(hf_folder: Path, setting: str, key: str):
    line = last_error(run_train(f"hf_path={hf_folder}", setting, "max_new_tokens=2", script="generate.py"))
    assert line.startswith(f"error: {key}: ")


def test_weights_that_are_not_finite_are_refused_where_they_are_read(hf_folder: Path, tmp_path: Path):
    def poison(tensors):
        tensors["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")

    bad = copy_with(hf_folder, tmp_path / "bad", poison)
    line = last_error(run_train(f"hf_path={bad}", script="generate.py"))
    assert "model.safetensors" in line and "transformer.h.0.mlp.c_fc.weight" in line


def test_a_tensor_of_the_wrong_shape_is_named_as_the_file_names_it(hf_folder: Path, tmp_path: Path):
    from llm_lab.errors import DataError
    from llm_lab.models.hf import load_hf

    def widen(tensors):
        tensors["transformer.h.0.attn.c_proj.weight"] = torch.zeros(16, 17)

    bad = copy_with(hf_folder, tmp_path / "bad", widen)
    with pytest.raises(DataError) as caught:
        load_hf(bad)
    assert "transformer.h.0.attn.c_proj.weight" in str(caught.value)
    assert "(16, 17)" in str(caught.value) and "(16, 16)" in str(caught.value)


def test_control_characters_are_escaped_on_a_terminal_and_kept_in_a_file(hf_folder: Path):
    import os
    import pty
    import subprocess

    from conftest import ENV, WORKDIR, command

    prompt = 'prompt="\x1b]0;owned\x07\x1b[2JHi"'  # retitle the window, clear the screen
    args = [f"hf_path={hf_folder}", prompt, "max_new_tokens=2"]
    to_file = run_train(*args, script="generate.py")  # stdout is not a terminal: the raw text
    assert to_file.returncode == 0, to_file.stderr[-2000:]
    assert "\x1b]0;owned\x07\x1b[2JHi" in to_file.stdout
    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        command("generate.py", *args), stdout=terminal, stderr=subprocess.PIPE, cwd=WORKDIR, env=ENV
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            piece = os.read(main, 4096)
        except OSError:  # the terminal's other end closed
            break
        if not piece:
            break
        shown += piece
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    os.close(main)
    assert b"\x1b" not in shown and b"\x07" not in shown and b"\\x1b]0;owned\\x07\\x1b[2JHi" in shown


# ----------------------------------------------------------------------------- 5. messages
def test_an_unreadable_override_gets_the_quoted_word_that_works(tmp_path: Path):
    run = tmp_path / "runs (1)"
    line = last_error(run_train(*MLP, f"hydra.run.dir={run}", "trainer.max_steps=1"))
    assert line.startswith("error: hydra.run.dir: ")
    word = line.split("quote the value: ")[1].removesuffix(")")
    import shlex

    followed = run_train(*MLP, *shlex.split(word), "trainer.max_steps=1")
    assert followed.returncode == 0, followed.stderr[-2000:]
    assert (run / "metrics.json").is_file()


def test_special_tokens_without_end_of_text_are_refused_by_that_key(tmp_path: Path):
    line = last_error(run_train("experiment=gpt", "tokenizer.special_tokens=[]", f"hydra.run.dir={tmp_path}"))
    assert line.startswith("error: tokenizer.special_tokens: ")
    assert not any((tmp_path / "checkpoints").glob("*"))

"""Integrity (issue 21): resumes, caches, checkpoints, numbers and messages never give a silent wrong
result. Each test walks the path a user walks and asserts the behaviour (the rate trained at, the
bytes rebuilt, the file left alone, the exit code and key), not the wording."""

from __future__ import annotations

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

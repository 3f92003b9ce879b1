"""Checkpoints survive a crash mid-write, a diverged run stops cleanly, and runs are reproducible."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY_GPT, Regression, final_weights, run_train
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.callbacks.finite_loss import DivergedError, FiniteLoss
from llm_lab.lit.checkpoint_io import AtomicCheckpointIO


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path: Path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # what a kill looks like from inside the writer

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    loaded = io.load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_checkpoints_are_read_without_unpickling_code(tmp_path: Path):
    path = tmp_path / "evil.ckpt"
    torch.save({"payload": print}, path)  # a pickled callable: weights_only must refuse it
    with pytest.raises(Exception, match="[Ww]eights only"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    data = TensorDataset(torch.randn(64, 2), torch.randn(64, 1))
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=10,
        callbacks=[ckpt, FiniteLoss()],
        logger=False,
        enable_progress_bar=False,
        plugins=[AtomicCheckpointIO()],
    )
    with pytest.raises(DivergedError, match="in step 4"):
        trainer.fit(Regression(nan_from=3), DataLoader(data, batch_size=8))
    state = AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    assert state["global_step"] == 3  # steps 1-3 were good; step 4 (NaN) was never saved
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


def _losses(run: Path) -> list[str]:
    with (run / "csv" / "metrics.csv").open() as f:
        return [row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")]


def test_two_runs_with_the_same_seed_have_identical_loss_curves(tmp_path: Path):
    args = [
        "experiment=cbow",
        "corpus.max_documents=40",
        "trainer.max_epochs=1",
        "model.embed_dim=8",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "trainer.deterministic=true",
        "test=false",
    ]
    a = run_train(*args, f"hydra.run.dir={tmp_path / 'a'}")
    b = run_train(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    losses = _losses(tmp_path / "a")
    assert len(losses) > 5 and losses == _losses(tmp_path / "b")
    c = run_train(*args, "seed=7", f"hydra.run.dir={tmp_path / 'c'}")
    assert c.returncode == 0, c.stderr[-2000:]
    assert _losses(tmp_path / "c") != losses  # and the seed does matter


GPT_TINY = [
    *TINY_GPT,
    "data.batch_size=8",
    "trainer.max_steps=40",
    "trainer.limit_train_batches=7",
    "trainer.deterministic=true",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "callbacks.text_samples.every_n_steps=5",
    "callbacks.text_samples.max_new_tokens=4",
]


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path):
    import os
    import signal
    import subprocess
    import time

    from conftest import WORKDIR, command

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        command("train.py", *GPT_TINY, f"hydra.run.dir={killed}"),
        cwd=WORKDIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 40

    # resume into the same run directory, as a user would after a crash
    again = run_train(*GPT_TINY, f"hydra.run.dir={killed}", f"ckpt_path={killed}")
    assert again.returncode == 0, again.stderr[-3000:]
    ref = run_train(*GPT_TINY, f"hydra.run.dir={straight}")
    assert ref.returncode == 0, ref.stderr[-3000:]
    expected, actual = final_weights(straight, 40), final_weights(killed, 40)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=0, rtol=0, msg=name)

"""The chapter-2 experiments end to end (perceptron, mlp_scratch, mlp, mlp_lm) and the
decision-boundary picture. Most runs compose the config as ``train.py`` does and fit in this
process (fast); the ones about what a user sees on the command line run ``train.py`` itself."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_in_process, run_train

from llm_lab.callbacks.decision_boundary import OUTLINE, PALETTE, REGION_TINT, render_decision_boundary


def tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    return acc.Tags()


# ---------------------------------------------------------------- the picture
def test_regions_and_points_are_drawn_where_they_belong() -> None:
    x = np.array([[-1.0, 0.0], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    y = np.array([0, 1, 0])
    image = render_decision_boundary(lambda g: (g[:, 0] > 0).long(), x, y, resolution=101, point_size=2)
    assert image.shape == (101, 101, 3) and image.dtype == np.uint8
    tint = (255 - REGION_TINT * (255 - PALETTE[:2])).astype(np.uint8)
    # The rule x0 > 0 splits the box [-1.2, 1.2] down the middle column.
    np.testing.assert_array_equal(image[0, 0], tint[0])
    np.testing.assert_array_equal(image[0, 100], tint[1])
    np.testing.assert_array_equal(image[-1, 49], tint[0])
    np.testing.assert_array_equal(image[-1, 51], tint[1])
    # The point (0.5, 0.5) of class 0 sits in class 1's region, near the top (x1 spans
    # [-0.05, 0.55] with the 10 % margin), drawn in its own colour with a dark outline.
    row, col = round((0.55 - 0.5) / 0.6 * 100), round((0.5 + 1.2) / 2.4 * 100)
    np.testing.assert_array_equal(image[row, col], PALETTE[0].astype(np.uint8))
    np.testing.assert_array_equal(image[row - 2, col + 2], PALETTE[0].astype(np.uint8))
    np.testing.assert_array_equal(image[row, col + 3], OUTLINE)
    np.testing.assert_array_equal(image[row + 3, col - 3], OUTLINE)
    np.testing.assert_array_equal(image[row, col + 5], tint[1])


# ---------------------------------------------------------------- experiments
def test_perceptron_separates_blobs_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llm_lab.lit.classify"):
        metrics = run_in_process(tmp_path / "run", "perceptron", "data.noise=0.3")
    assert metrics["val/acc"] == 1.0
    assert "separates the training data" in caplog.text
    # Converged early: a mistake-free epoch stops training long before max_epochs.
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] < 10
    tags = tensorboard_tags(tmp_path / "run")
    assert "val/decision_boundary" in tags["images"]
    assert any(t.startswith("perceptron/result") for t in tags["tensors"])  # the verdict as text


@pytest.mark.parametrize(
    ("experiment", "name", "epochs", "min_acc"),
    [
        ("mlp_scratch", "moons", 15, 0.95),
        ("mlp", "moons", 15, 0.95),
    ],
)
def test_mlp_experiments_learn_and_draw(
    tmp_path: Path, experiment: str, name: str, epochs: int, min_acc: float
) -> None:
    run = tmp_path / "run"
    metrics = run_in_process(run, experiment, f"data.name={name}", f"trainer.max_epochs={epochs}")
    assert metrics["val/acc"] >= min_acc, metrics
    assert metrics["val/loss"] < math.log(2)  # better than guessing between two classes
    tags = tensorboard_tags(run)
    assert {"loss/train", "loss/val", "val/acc"} <= set(tags["scalars"])
    assert "val/decision_boundary" in tags["images"]


def test_max_steps_and_scheduler_drive_hand_written_updates(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = run_in_process(
        run,
        "mlp_scratch",
        "trainer.max_steps=7",
        "trainer.max_epochs=100",
        "scheduler=linear",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 7
    # Linear decay over the 7 steps: the rate the last step used is 1/7 of optimizer.lr = 0.5.
    assert metrics["lr/HandWrittenUpdate"] == pytest.approx(0.5 / 7, rel=1e-6)
    # The scratch weights live in the checkpoint like any model's.
    assert "net.layers.0.weight" in ckpt["state_dict"]


def test_mlp_lm_reports_loss_and_perplexity(tmp_path: Path) -> None:
    metrics = run_in_process(
        tmp_path / "run",
        "mlp_lm",
        "corpus.max_documents=40",
        "trainer.max_steps=20",
        "trainer.val_check_interval=20",
        "trainer.limit_val_batches=5",
        "callbacks.model_checkpoint=null",
    )
    assert math.isfinite(metrics["val/loss"]) and metrics["val/perplexity"] > 1


def test_perceptron_stopped_mid_epoch_does_not_claim_a_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three steps of the first epoch (debug-style runs): too soon to say the data is separable or
    not, and the epoch that was cut short counts as one."""
    with caplog.at_level(logging.INFO, logger="llm_lab.lit.classify"):
        run_in_process(tmp_path / "run", "perceptron", "data.name=xor", "trainer.max_steps=3")
    assert "in its last epoch (cut short by trainer.max_steps), after 1 epoch." in caplog.text, caplog.text
    assert "separates the training data" not in caplog.text


# ---------------------------------------------------------------- what the command line shows
@pytest.mark.slow  # a fresh interpreter per run: ~10-20 s each on a busy 2-core CPU
def test_perceptron_on_xor_says_it_has_not_separated(tmp_path: Path) -> None:
    proc = run_train(
        "experiment=perceptron",
        "data.name=xor",
        "trainer.max_epochs=2",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = "has not separated the training data: "
    assert verdict in proc.stdout + proc.stderr and "after 2 epochs." in proc.stdout + proc.stderr
    assert verdict in (tmp_path / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "override", "key", "listed"),
    [
        # (data.noise and model.net.hidden_sizes are checked the same way; see the unit tests)
        ("mlp", "data.n_samples=0", "data.n_samples", None),
        ("mlp_scratch", "model.net.activation=swish", "model.net.activation", "sigmoid"),
        ("perceptron", "optimizer=adamw", "optimizer", None),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, experiment: str, override: str, key: str, listed: str | None
) -> None:
    proc = run_train(f"experiment={experiment}", override, "logger=csv", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and key in last, last
    if listed:
        assert listed in last and "relu" in last

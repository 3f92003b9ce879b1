"""``train.py experiment=gpt optimizer=adamw_scratch`` trains the GPT on the lab's own AdamW: the same
loss curve and weights as torch.optim.AdamW, and a resumed run ends with the uninterrupted weights."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from conftest import TINY_GPT, final_weights, run_in_process

# TINY_GPT without its experiment (run_in_process sets it), every step logged, no text samples.
# The experiment's gradient clipping (trainer.gradient_clip_val=1.0) stays on.
TINY = [
    *TINY_GPT[1:],
    "data.batch_size=8",
    "trainer.limit_train_batches=5",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "callbacks.text_samples=null",
]


def _losses(run: Path) -> list[float]:
    with (run / "csv" / "metrics.csv").open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def test_the_labs_adamw_trains_the_gpt_like_torchs(tmp_path: Path) -> None:
    runs = {}
    for optimizer in ("adamw", "adamw_scratch"):
        runs[optimizer] = tmp_path / optimizer
        run_in_process(
            runs[optimizer],
            "gpt",
            *TINY,
            f"optimizer={optimizer}",
            "trainer.max_steps=8",
            "scheduler.warmup_steps=2",
        )
    reference, ours = _losses(runs["adamw"]), _losses(runs["adamw_scratch"])
    assert len(reference) == 8 and reference[-1] < reference[0] - 0.2  # it learned
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(reference), atol=1e-5, rtol=0)
    expected, actual = final_weights(runs["adamw"], 8), final_weights(runs["adamw_scratch"], 8)
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=1e-5, rtol=0, msg=name)


def test_a_resumed_run_on_the_labs_adamw_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    """Stop after 6 steps (one batch into the second 5-batch epoch), resume to 12; the warm-up
    covers all 12 steps so that the learning rate depends only on the step (as in
    test_gpt_experiment.py's resume test, here with the optimizer state being the lab's)."""
    common = [*TINY, "optimizer=adamw_scratch", "scheduler.warmup_steps=100"]
    part, straight, resumed = tmp_path / "part", tmp_path / "straight", tmp_path / "resumed"
    run_in_process(part, "gpt", *common, "trainer.max_steps=6")
    saved = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]["state"]
    assert saved and all(s["step"] == 6 and {"exp_avg", "exp_avg_sq"} <= set(s) for s in saved.values())
    run_in_process(straight, "gpt", *common, "trainer.max_steps=12")
    run_in_process(resumed, "gpt", *common, "trainer.max_steps=12", f"ckpt_path={part}")
    expected, actual = final_weights(straight, 12), final_weights(resumed, 12)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=0, rtol=0, msg=name)


def test_the_labs_gradient_clipping_trains_the_gpt_like_torchs(tmp_path: Path) -> None:
    """gradient_clip_backend=lab clips with llm_lab/nn/clipping.py: the same weights as
    torch's clipping, bit for bit (Adam hardly reacts to a rescaled gradient, so only exact equality
    shows that the lab's clip ran at all), and other weights than no clipping."""
    runs = {}
    for name, extra in (
        ("torch", ["trainer.gradient_clip_val=0.05"]),
        ("lab", ["trainer.gradient_clip_val=0.05", "gradient_clip_backend=lab"]),
        ("none", ["trainer.gradient_clip_val=null"]),
    ):
        runs[name] = tmp_path / name
        run_in_process(runs[name], "gpt", *TINY, *extra, "trainer.max_steps=6", "scheduler.warmup_steps=2")
    torch_clip, lab_clip, unclipped = (final_weights(runs[n], 6) for n in ("torch", "lab", "none"))
    for name, tensor in torch_clip.items():
        torch.testing.assert_close(lab_clip[name], tensor, atol=0, rtol=0, msg=name)
    assert any(not torch.equal(unclipped[n], t) for n, t in torch_clip.items())

"""``trainer=fsdp`` (FSDP2) on two CPU processes over gloo: it clips the gradient norm of the whole
model across the shards, checkpoints one full state dict, resumes exactly, and exports the gathered
weights as ``model.safetensors``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_GPT, final_weights, run_process, run_train
from safetensors.torch import load_file

# A clip far below the gradient norms of these steps (~1-2): every step is clipped.
LM = [
    *TINY_GPT,
    "model.net.dropout=0.0",
    "callbacks.text_samples.every_n_steps=2",  # generation on a sharded model, every process
    "callbacks.text_samples.max_new_tokens=4",
    "logger=tensorboard",
    "trainer.gradient_clip_val=0.05",
    "scheduler.warmup_steps=10",
]
FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


@pytest.mark.slow
def test_fsdp_clips_checkpoints_resumes_and_exports_like_one_process(tmp_path: Path):
    runs = {name: tmp_path / name for name in ("fsdp", "single", "resumed")}
    # Two processes with batch b see, at each step, the windows of one process with batch 2b (as DDP).
    # Every checkpoint is kept: the one of step 2 is resumed below.
    fsdp = run_process(
        *LM,
        *FSDP,
        "data.batch_size=4",
        "trainer.max_steps=4",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.save_top_k=-1",
        f"hydra.run.dir={runs['fsdp']}",
    )
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    single = run_train(*LM, "data.batch_size=8", "trainer.max_steps=4", f"hydra.run.dir={runs['single']}")
    assert single.returncode == 0, single.stderr[-3000:]
    sharded, whole = final_weights(runs["fsdp"], 4), final_weights(runs["single"], 4)
    assert sharded.keys() == whole.keys()
    for name in whole:  # the clip used the norm of all the shards' gradients together
        torch.testing.assert_close(sharded[name], whole[name], atol=2e-5, rtol=1e-4, msg=name)

    exported = load_file(runs["fsdp"] / "model.safetensors")  # gathered: full shapes, same values
    assert {f"net.{k}" for k in exported} == set(sharded)
    for name, tensor in exported.items():
        assert torch.equal(tensor, sharded[f"net.{name}"]), name

    step2 = runs["fsdp"] / "checkpoints" / "step2.ckpt"
    resumed = run_process(
        *LM,
        *FSDP,
        "data.batch_size=4",
        "trainer.max_steps=4",
        f"hydra.run.dir={runs['resumed']}",
        f"ckpt_path={step2}",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name, tensor in final_weights(runs["resumed"], 4).items():  # exactly the uninterrupted run
        torch.testing.assert_close(tensor, sharded[name], atol=0, rtol=0, msg=name)

    sample = run_train(f"ckpt_path={runs['fsdp']}", "prompt=The", "max_new_tokens=4", script="generate.py")
    assert sample.returncode == 0 and sample.stdout.startswith("The"), sample.stderr[-2000:]

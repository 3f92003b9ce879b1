"""Data-parallel training on CPU (gloo): two processes with batch b equal one process with batch 2b."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_GPT, final_weights, run_process, run_train

LM = [*TINY_GPT, "model.net.dropout=0.0", "trainer.max_steps=4", "callbacks.text_samples=null"]


def test_two_process_ddp_equals_one_process_with_the_combined_batch(tmp_path: Path):
    # Rank r takes windows perm[r::2] of the epoch's permutation (DistributedSampler's rule), so the
    # union of the two rank batches at step k is exactly the single process's batch k of size 2b,
    # and DDP's mean of the two mean gradients is the mean gradient of that batch.
    ddp = run_process(
        *LM,
        "trainer=ddp_cpu",
        "data.batch_size=4",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        f"paths.cache_dir={tmp_path / 'cache'}",  # empty: this run trains and prepares
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Both processes need the tokenizer and the ids; only the first made them, the second reused them.
    assert ddp.stdout.count("training the bpe tokenizer") == 1
    assert ddp.stderr.count("prepare train:") == 1
    single = run_train(*LM, "data.batch_size=8", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    # Validation is the mean over every window once, whichever rank scored it: the same number.
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert ddp_metrics["val/loss"] == pytest.approx(single_metrics["val/loss"], rel=1e-5)
    a, b = final_weights(tmp_path / "ddp", 4), final_weights(tmp_path / "single", 4)
    assert a.keys() == b.keys()
    for name in a:
        # float32 sums in a different order (all-reduce): equal up to rounding
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)

"""``train.py experiment=gpt`` end to end on a tiny model: it composes, learns, logs samples, writes
a checkpoint that ``generate.py`` continues from, and resumes to exactly the uninterrupted weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, final_weights, run_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from llm_lab.models import GPT

# A few seconds of training: 8 documents, a 300-token BPE, the lab-tiny GPT on 32-token windows.
TINY_RUN = [
    "experiment=gpt",
    "model.net.size=lab-tiny",
    "corpus.max_documents=8",
    "tokenizer.vocab_size=300",
    "data.context_length=32",
    "data.stride=32",
    "data.batch_size=8",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "callbacks.model_checkpoint.every_n_train_steps=4",
    "callbacks.text_samples.every_n_steps=4",
    "callbacks.text_samples.max_new_tokens=6",
    "scheduler.warmup_steps=2",
    "trainer.log_every_n_steps=1",
]


def test_experiment_composes_into_a_gpt_sized_by_the_data() -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gpt"], return_hydra_config=True)
    assert cfg.task_name == "gpt" and cfg.optimized_metric == "val/loss"
    net = instantiate(cfg.model.net)(vocab_size=123)
    assert isinstance(net, GPT)
    assert net.config.context_length == cfg.data.context_length
    assert net.config.vocab_size == 123


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("gpt_run")
    result = run_train(*TINY_RUN, "trainer.max_steps=8", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_tiny_run_learns_and_writes_its_artifacts(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["val/perplexity"] == pytest.approx(2.718281828 ** metrics["val/loss"], rel=1e-4)
    assert (tiny_run / "tokenizer.json").is_file()
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    events = EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    losses = [e.value for e in events.Scalars("loss/train")]
    assert losses[-1] < losses[0] - 0.2  # 8 AdamW steps from ln(300) ≈ 5.7: clearly downhill (nats)
    for tag in ("loss/val", "val/perplexity", "throughput/tokens_per_sec", "train/grad_norm"):
        assert tag in events.Tags()["scalars"], tag
    assert any(tag.startswith("samples/") for tag in events.Tags()["tensors"])


def test_generate_py_continues_a_prompt_from_the_checkpoint(tiny_run: Path) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    result = run_train(
        f"ckpt_path={ckpt}",
        "prompt=The function",
        "max_new_tokens=12",
        "num_samples=2",
        "seed=3",
        script="generate.py",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [s for s in result.stdout.split("--- sample ") if s.strip()]
    assert len(samples) == 2
    assert all(s.split("\n", 1)[1].startswith("The function") for s in samples)


def test_generate_py_reports_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    result = run_train(f"ckpt_path={tmp_path / 'none.ckpt'}", script="generate.py", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """Interrupt after 6 steps (one batch into the second 5-batch epoch), resume to 12.

    The interrupted run stops at max_steps=6, between two periodic checkpoints (every 4 steps), and
    is resumed from its run directory, i.e. the last.ckpt written after its final step (a killed run
    is covered in test_fault_tolerance.py). The warm-up covers all 12 steps so that the learning
    rate depends only on the step count (a run stopped by max_steps=6 would otherwise have decayed
    on a 6-step cosine)."""
    common = [
        *TINY_RUN,
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "trainer.limit_train_batches=5",
        "scheduler.warmup_steps=100",
        "trainer.deterministic=true",
    ]
    straight, part, resumed = tmp_path / "straight", tmp_path / "part", tmp_path / "resumed"
    result = run_train(*common, "trainer.max_steps=6", f"hydra.run.dir={part}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    for args in (
        ["trainer.max_steps=12", f"hydra.run.dir={straight}"],
        ["trainer.max_steps=12", f"hydra.run.dir={resumed}", f"ckpt_path={part}"],
    ):
        result = run_train(*common, *args)
        assert result.returncode == 0, result.stderr[-3000:]
    expected, actual = final_weights(straight, 12), final_weights(resumed, 12)
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=0, rtol=0, msg=name)


def test_the_run_exports_its_final_weights_as_safetensors(tiny_run: Path) -> None:
    from safetensors.torch import load_file

    exported = load_file(tiny_run / "model.safetensors")
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    final = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()}
    assert ckpt["global_step"] == 8 and set(exported) <= set(final)
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, final[name], atol=0, rtol=0, msg=name)


def test_train_false_evaluates_the_given_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "checkpoint"
    common = [*TINY_RUN, "train=false", "test=true", "+trainer.limit_test_batches=2"]
    result = run_train(*common, f"ckpt_path={tiny_run}", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run / "metrics.json").read_text())
    # the test loader is the validation loader, and both stages must score the checkpoint's weights
    assert trained["test/loss"] == pytest.approx(trained["val/loss"], abs=1e-5)
    # fresh weights score about ln(vocabulary size): 8 trained steps are well below that
    assert trained["test/loss"] < math.log(300) - 0.2
    # without a checkpoint there is nothing to evaluate: refused, not scored on random weights
    untrained = run_train(*common, f"hydra.run.dir={tmp_path / 'untrained'}")
    assert untrained.returncode == 2 and "error: ckpt_path: train=false" in untrained.stderr


def test_a_sweep_trains_its_tokenizer_once_and_prepares_its_ids_once(tmp_path: Path) -> None:
    """Two GPT runs of a grid sweep share the corpus and tokenizer settings: the first trains the
    BPE and prepares the ids, the second finds both in the cache (each run says when it trains)."""
    result = run_train(
        "-m",
        *TINY_RUN,
        "trainer.max_steps=2",
        "optimizer.lr=1e-3,2e-3",
        f"hydra.sweep.dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "0" / "metrics.json").is_file() and (tmp_path / "1" / "metrics.json").is_file()
    assert result.stdout.count("training the bpe tokenizer") == 1
    assert result.stderr.count("prepare train:") == 1
    assert len(list((tmp_path / "cache" / "tokenizers").glob("bpe-*/tokenizer.json"))) == 1

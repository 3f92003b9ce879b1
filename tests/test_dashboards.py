"""What TensorBoard shows of a finished run, read the way TensorBoard reads it: one run per
directory (its event files merged), every scalar a curve whose last point is its latest step, and
an HParams record listing what runs are compared by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_GPT, run_train
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2

from llm_lab.models.gpt import GPTConfig


def load_like_tensorboard(logdir: Path) -> EventMultiplexer:
    """TensorBoard's own loader: every folder holding event files below ``logdir`` is one run."""
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return multiplexer


def hparams_of(multiplexer: EventMultiplexer, run: str) -> tuple[dict[str, Any], set[str]]:
    """The hyperparameters and metric tags of a run's HParams record."""
    hparams: dict[str, Any] = {}
    metrics: set[str] = set()
    for blob in multiplexer.PluginRunToTagToContent("hparams").get(run, {}).values():
        data = plugin_data_pb2.HParamsPluginData.FromString(blob)
        for name, value in data.session_start_info.hparams.items():
            hparams[name] = getattr(value, value.WhichOneof("kind"))
        metrics |= {m.name.tag for m in data.experiment.metric_infos}
    return hparams, metrics


@pytest.fixture(scope="module")
def finished_gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outputs = tmp_path_factory.mktemp("outputs")
    run = outputs / "gpt" / "runs" / "one"
    result = run_train(
        *TINY_GPT,
        "logger=tensorboard",
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=2",
        "test=true",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return outputs


def test_every_scalar_ends_at_its_latest_step_and_losses_are_curves(finished_gpt_run: Path):
    multiplexer = load_like_tensorboard(finished_gpt_run)
    scalars = multiplexer.PluginRunToTagToContent("scalars")
    assert len(scalars) == 1, scalars  # one run directory, one TensorBoard run
    run, tags = next(iter(scalars.items()))
    for tag in tags:
        steps = [e.step for e in multiplexer.Tensors(run, tag)]
        assert steps[-1] == max(steps), (tag, steps)  # the point TensorBoard shows last is the latest
    assert len(multiplexer.Tensors(run, "train/loss")) >= 5
    assert len(multiplexer.Tensors(run, "val/loss")) >= 3  # one point per validation, no copy at step 0


def test_hparams_list_the_choices_and_values_people_compare(finished_gpt_run: Path):
    multiplexer = load_like_tensorboard(finished_gpt_run)
    run = next(iter(multiplexer.PluginRunToTagToContent("scalars")))
    hparams, metrics = hparams_of(multiplexer, run)
    assert hparams["experiment"] == "gpt" and hparams["optimizer"] == "adamw" and hparams["model"] == "gpt"
    assert hparams["model/net/size"] == "lab-tiny" and hparams["optimizer/lr"] == pytest.approx(1e-3)
    assert hparams["tokenizer/vocab_size"] == 300 and hparams["trainer/max_steps"] == 12
    # The values the net was built with, not the config's nulls: lab-tiny's preset, as GPTConfig has it.
    preset = GPTConfig.from_name("lab-tiny")
    assert (hparams["model/net/n_layer"], hparams["model/net/n_embd"]) == (preset.n_layer, preset.n_embd)
    assert not [k for k in hparams if "_target_" in k or k.startswith(("callbacks", "paths", "logger"))]
    # Each metric the record names has a curve in the run, whose last point HParams shows.
    assert {"val/loss", "train/loss", "test/loss"} <= metrics
    assert metrics <= set(multiplexer.PluginRunToTagToContent("scalars")[run])

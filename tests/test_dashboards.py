"""What TensorBoard shows of a finished run, read the way TensorBoard reads it (its event
multiplexer, its HParams plugin answering the tab's requests, its Text tab's Markdown renderer):
one run per directory, named by its folder; curves whose last point is their latest step, the
losses in the group the page opens on; an HParams table whose first columns are what a sweep
varied, its first metric the optimized one, its trials named by their values; tables that show
every word as written. And metrics.csv (``logger=csv``), which a resumed run continues."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_GPT, Sweep, run_train
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugin_util import markdown_to_safe_html
from tensorboard.plugins.base_plugin import TBContext
from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin
from tensorboard.plugins.text.text_plugin import text_array_to_html
from tensorboard.util import tensor_util
from werkzeug.test import Client
from werkzeug.wrappers import Response

from llm_lab.callbacks.attention_maps import colourise, heatmap_image
from llm_lab.errors import DataError
from llm_lab.hparams import run_label
from llm_lab.loggers import LabCSVLogger, markdown_table
from llm_lab.models.gpt import GPTConfig


def load_like_tensorboard(logdir: Path) -> EventMultiplexer:
    """TensorBoard's own loader: every folder holding event files below ``logdir`` is one run."""
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return multiplexer


def hparams_tab(logdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What TensorBoard's HParams tab fetches for ``tensorboard --logdir LOGDIR``, from the plugin
    itself: the experiment (its columns, which the plugin sorts: varied keys first) and the
    session groups (its rows: one per trial, with its name, values and metrics)."""
    multiplexer = load_like_tensorboard(logdir)
    provider = MultiplexerDataProvider(multiplexer, str(logdir))
    context = TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    apps = HParamsPlugin(context).get_plugin_apps()

    def ask(route: str, request: dict[str, Any]) -> Any:
        response = Client(apps[route], Response).post(
            route, data=json.dumps(request), content_type="application/json"
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data(as_text=True))

    experiment = ask("/experiment", {"experimentName": ""})
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    columns = [{"metric": m["name"], "order": "ORDER_UNSPECIFIED"} for m in experiment["metricInfos"]]
    groups = ask(
        "/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": statuses,
            "colParams": columns,
            "startIndex": 0,
            "sliceSize": 100,
        },
    )
    return experiment, groups["sessionGroups"]


def metric_values(group: dict[str, Any]) -> list[float]:
    """A session group's metric values, in the experiment's metric order."""
    return [m["value"] for m in group["metricValues"]]


def text_as_shown(multiplexer: EventMultiplexer, run: str, tag: str) -> str:
    """The HTML the Text tab shows for the newest ``tag`` of ``run`` (its own Markdown renderer)."""
    event = multiplexer.Tensors(run, f"{tag}/text_summary")[-1]
    return text_array_to_html(tensor_util.make_ndarray(event.tensor_proto), enable_markdown=True)


class TableCells(HTMLParser):
    """The text of every cell of the innermost HTML tables of a page, row by row (the Text tab
    shows a text in a table of its own, which holds the text's tables)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # tables open
        self.found: list[tuple[int, list[str]]] = []  # (depth, row)
        self.cells: list[list[str]] = []  # the text of the cells open, outermost first

    @property
    def rows(self) -> list[list[str]]:
        deepest = max((depth for depth, _ in self.found), default=0)
        return [row for depth, row in self.found if depth == deepest]

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.depth += 1
        elif tag == "tr":
            self.found.append((self.depth, []))
        elif tag in ("td", "th"):
            self.cells.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.depth -= 1
        elif tag in ("td", "th"):
            text = "".join(self.cells.pop())
            row = next(row for depth, row in reversed(self.found) if depth == self.depth)
            row.append(text)

    def handle_data(self, data: str) -> None:
        if self.cells:
            self.cells[-1].append(data)


@dataclass
class Finished:
    outputs: Path  # the outputs/ folder a user would give tensorboard --logdir
    run: Path
    console: str  # what the command printed


@pytest.fixture(scope="module")
def finished_gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    outputs = tmp_path_factory.mktemp("outputs")
    run = outputs / "gpt" / "runs" / "one"
    result = run_train(
        *TINY_GPT,
        "logger=tensorboard",
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=2",
        "callbacks.text_samples.max_new_tokens=6",
        "test=true",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Finished(outputs, run, result.stdout + result.stderr)


def test_every_scalar_ends_at_its_latest_step_and_losses_are_curves(finished_gpt_run: Finished):
    multiplexer = load_like_tensorboard(finished_gpt_run.outputs)
    scalars = multiplexer.PluginRunToTagToContent("scalars")
    assert len(scalars) == 1, scalars  # one run directory, one TensorBoard run
    run, tags = next(iter(scalars.items()))
    for tag in tags:
        steps = [e.step for e in multiplexer.Tensors(run, tag)]
        assert steps[-1] == max(steps), (tag, steps)  # the point TensorBoard shows last is the latest
    assert len(multiplexer.Tensors(run, "loss/train")) >= 5
    assert len(multiplexer.Tensors(run, "loss/val")) >= 3  # one point per validation, no copy at step 0


def tag_groups(tags: Iterable[str]) -> list[str]:
    """TensorBoard's groups of tags in the order Time Series and Scalars show them: by the part
    before the first ``/``, in name order; the first two are open when the page opens."""
    return list(dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(tags)))


def test_scalars_open_on_the_losses_with_one_learning_rate_and_no_epoch(finished_gpt_run: Finished):
    multiplexer = load_like_tensorboard(finished_gpt_run.outputs)
    run, tags = next(iter(multiplexer.PluginRunToTagToContent("scalars").items()))
    images = multiplexer.PluginRunToTagToContent("images").get(run, {})
    assert tag_groups([*tags, *images])[:2] == ["loss", "lr"]  # Time Series shows images among them
    assert {"loss/train", "loss/val", "loss/test"} <= set(tags)
    # A GPT's two parameter groups (with and without weight decay) share one rate: one curve.
    assert [t for t in tags if t.startswith("lr")] == ["lr/AdamW"]
    assert "epoch" not in tags
    assert "throughput/tokens_per_sec" in tags and not [
        t for t in tags if "per_sec" in t and t.startswith("train")
    ]
    # The learning rate is the schedule's: warm-up to optimizer.lr (1e-3) at step warmup_steps.
    rates = {
        e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in multiplexer.Tensors(run, "lr/AdamW")
    }
    assert rates[0] < rates[2] and max(rates.values()) <= 1e-3 * (1 + 1e-6)
    assert not (finished_gpt_run.run / "tensorboard" / "hparams.yaml").exists()  # Lightning's empty {}


def test_hparams_list_the_settings_people_compare(finished_gpt_run: Finished):
    experiment, groups = hparams_tab(finished_gpt_run.outputs / "gpt")
    columns = [h["name"] for h in experiment["hparamInfos"]]
    # A single run: its handful of key settings, which the tab ticks (it ticks five).
    assert columns == [
        "data.batch_size",
        "model.net.size",
        "optimizer.lr",
        "tokenizer",
        "tokenizer.vocab_size",
    ]
    assert [m["displayName"] for m in experiment["metricInfos"]][:3] == [
        "val/loss",
        "train/loss",
        "test/loss",
    ]
    assert "val/perplexity" in [m["displayName"] for m in experiment["metricInfos"]]
    (group,) = groups
    assert group["name"] == "one"  # the run folder's name, not a path the table cuts short
    hparams = group["hparams"]
    assert hparams["experiment"] == "gpt" and hparams["optimizer"] == "adamw" and hparams["model"] == "gpt"
    assert hparams["model.net.size"] == "lab-tiny" and hparams["optimizer.lr"] == pytest.approx(1e-3)
    assert hparams["tokenizer.vocab_size"] == 300 and hparams["trainer.max_steps"] == 12
    # The values the net was built with, not the config's nulls: lab-tiny's preset, as GPTConfig has it.
    preset = GPTConfig.from_name("lab-tiny")
    assert (hparams["model.net.n_layer"], hparams["model.net.n_embd"]) == (preset.n_layer, preset.n_embd)
    assert not [k for k in hparams if "_target_" in k or k.startswith(("callbacks", "paths", "logger"))]
    assert "None" not in hparams.values()
    # Each metric is the last point of its curve, as the scalars have it.
    metrics = json.loads((finished_gpt_run.run / "metrics.json").read_text())
    shown = {
        m["name"]["tag"]: value
        for m, value in zip(experiment["metricInfos"], metric_values(group), strict=True)
    }
    assert shown["loss/val"] == pytest.approx(metrics["val/loss"], rel=1e-6)


def test_gpt_samples_set_the_prompt_apart(finished_gpt_run: Finished):
    multiplexer = load_like_tensorboard(finished_gpt_run.outputs)
    run, tags = next(iter(multiplexer.PluginRunToTagToContent("text").items()))
    prompts = ["The function", "A list is", "In Python,"]  # conf/experiment/gpt.yaml
    assert sorted(t for t in tags if t.startswith("samples/")) == sorted(
        f"samples/{p}/text_summary" for p in prompts
    )
    for prompt in prompts:
        html = text_as_shown(multiplexer, run, f"samples/{prompt}")
        assert f"<strong>prompt:</strong> {prompt}" in html
        assert re.search(r"<pre><code>[^<]+</code></pre>", html), html  # the continuation, verbatim


def test_a_cpu_run_keeps_mfu_and_lightnings_notices_off_the_console(finished_gpt_run: Finished):
    log = (finished_gpt_run.run / "train.log").read_text()
    for line in ("train/mfu is not logged", "`Trainer.fit` stopped"):
        assert line not in finished_gpt_run.console and line in log
    assert "Test metric" not in finished_gpt_run.console and "DataLoader 0" not in finished_gpt_run.console
    assert re.search(r"^test at step 12 test/loss=\d", finished_gpt_run.console, re.M)


# ------------------------------------------------------------------------- README's sweep
def test_the_readme_sweep_shows_which_setting_won(readme_sweep: Sweep):
    experiment, groups = hparams_tab(readme_sweep.outputs / "cbow")
    columns = [h["name"] for h in experiment["hparamInfos"]]
    assert columns[:2] == ["model.embed_dim", "optimizer.lr"] and len(columns) <= 5  # all ticked
    assert experiment["metricInfos"][0]["displayName"] == "val/loss"  # optimized_metric first
    # The Trial ID column shows about 15 characters: the names differ within them.
    names = sorted(g["name"] for g in groups)
    assert names == ["dim=32,lr=0.05", "dim=32,lr=0.07", "dim=64,lr=0.05", "dim=64,lr=0.07"]  # README's
    for group in groups:
        dim, lr = (part.split("=")[1] for part in group["name"].split(","))
        assert group["hparams"]["model.embed_dim"] == int(dim)
        assert group["hparams"]["optimizer.lr"] == float(lr)
        for column in columns:  # no column of None
            assert group["hparams"].get(column) not in (None, "None"), column
    # TensorBoard names a run by its folder: each trial's says what it varied, key by key.
    runs = load_like_tensorboard(readme_sweep.outputs / "cbow").Runs()
    assert sorted(run.rsplit("/", 1)[-1] for run in runs) == [f"embed_{name}" for name in names]


def test_the_readme_sweep_opens_on_the_losses(readme_sweep: Sweep):
    multiplexer = load_like_tensorboard(readme_sweep.outputs / "cbow")
    for run, tags in multiplexer.PluginRunToTagToContent("scalars").items():
        assert tag_groups(tags)[:2] == ["loss", "lr"], (run, sorted(tags))
        assert "throughput/words_per_sec" in tags and "epoch" not in tags


def test_the_neighbour_table_renders_every_word_as_written(readme_sweep: Sweep):
    multiplexer = load_like_tensorboard(readme_sweep.outputs / "cbow")
    run = sorted(multiplexer.Runs())[0]
    html = text_as_shown(multiplexer, run, "embeddings/nearest_neighbours")
    assert "<table>" in html and "<strong>" not in html and "<em>" not in html


def test_a_single_runs_name_tells_one_days_runs_apart_in_15_characters():
    assert run_label("2026-12-07_13-21-00") == "12-07 13:21:00"
    assert run_label("2026-12-07_13-21-00_2") == "12-07 13:21:00_2"  # a second run in the same second
    assert run_label("mine") == "mine"  # hydra.run.dir=outputs/mine


def test_markdown_tables_show_their_cells_as_written():
    cells = ["__main__", "a|b", "<b>bold</b>", "*x* [y](z)", "`tick`", "1. # h", "\\n"]
    html = markdown_to_safe_html(markdown_table(("word", "also"), [(c, c) for c in cells]))
    parser = TableCells()
    parser.feed(html)
    assert parser.rows[1:] == [[c, c] for c in cells]


def test_bpe_merges_come_with_a_legend_for_byte_symbols(tmp_path: Path):
    run = tmp_path / "run"
    result = run_train(
        "experiment=bpe",
        "corpus.max_documents=20",
        "tokenizer.vocab_size=300",
        "logger=tensorboard",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    multiplexer = load_like_tensorboard(run)
    (only,) = multiplexer.Runs()
    html = text_as_shown(multiplexer, only, "bpe/first_merges")
    assert "<strong>Ġ</strong> is a space" in html
    parser = TableCells()
    parser.feed(html)
    header, first, *_ = parser.rows
    assert header == ["rank", "merge", "pair count"] and first[0] == "1"
    left, right = first[1].split(" → ")[0].split(" + ")
    assert first[1].endswith(f"→ {left}{right}")  # the pair and the token it makes


# ------------------------------------------------------------------------------------ metrics.csv
def csv_rows(file: Path) -> list[dict[str, str]]:
    with file.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_run_appends_to_its_metrics_csv(tmp_path: Path):
    run = tmp_path / "run"
    args = [*TINY_GPT, "trainer.log_every_n_steps=1", "callbacks.text_samples=null", f"hydra.run.dir={run}"]
    first = run_train(*args, "trainer.max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    before = csv_rows(run / "csv" / "metrics.csv")
    resumed = run_train(*args, "trainer.max_steps=8", f"ckpt_path={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = csv_rows(run / "csv" / "metrics.csv")
    assert after[: len(before)] == before  # the first part's rows, as they were
    losses = [int(row["step"]) for row in after if row["train/loss"]]
    assert losses == list(range(8))  # then the resumed steps: each step once, in order


def test_rows_the_resumed_run_logs_again_are_replaced_and_a_foreign_file_is_named(tmp_path: Path):
    """Resumed from a checkpoint at step 3 of a run that had logged up to step 5, the run logs steps
    3 to 5 again: they replace the earlier rows rather than appear twice. The validation of the
    checkpoint's weights at step 3 measured what the new rows do not, and stays."""
    folder = tmp_path / "csv"
    folder.mkdir()
    metrics = folder / "metrics.csv"
    earlier = "".join(f"{step},{9 - step},\n" for step in range(6))
    metrics.write_text("step,train/loss,val/loss\n" + earlier + "3,,6.9\n")
    logger = LabCSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 6.5}, step=3)
    logger.log_metrics({"train/loss": 5.5, "train/grad_norm": 1.0}, step=4)
    logger.save()
    rows = [
        (row["step"], row["train/loss"], row["val/loss"], row["train/grad_norm"]) for row in csv_rows(metrics)
    ]
    assert rows == [
        ("0", "9", "", ""),
        ("1", "8", "", ""),
        ("2", "7", "", ""),
        ("3", "", "6.9", ""),
        ("3", "6.5", "", ""),
        ("4", "5.5", "", "1.0"),
    ]
    metrics.write_text("time,loss\n1,2\n")
    with pytest.raises(DataError, match=f"^{metrics}: no step column"):
        LabCSVLogger(tmp_path, name="csv", version="").experiment  # noqa: B018 - opening it reads the file


def test_a_metrics_csv_cut_short_by_a_kill_is_continued(tmp_path: Path):
    (tmp_path / "csv").mkdir()
    metrics = tmp_path / "csv" / "metrics.csv"
    metrics.write_text("epoch,step,train/loss\n0,0,9.0\n0,1,8.0\n0,")  # killed while writing step 2
    logger = LabCSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"epoch": 0, "train/loss": 7.0}, step=2)
    logger.save()
    assert [(row["step"], row["train/loss"]) for row in csv_rows(metrics)] == [
        ("0", "9.0"),
        ("1", "8.0"),
        ("2", "7.0"),
    ]


def test_a_heatmap_carries_its_colour_scale():
    """Beside the cells, a bar with every shade the cells use, from the darkest (a row's maximum)
    at the top to white (no attention) at the bottom: the scale the picture is read by."""
    weights = np.tril(np.ones((4, 4)))
    image = heatmap_image(weights / weights.sum(axis=1, keepdims=True), ["a", "b", "c", "d"], cell=18)
    scale = colourise(np.linspace(1.0, 0.0, 4 * 18))[1:-1]  # inside the bar's outline

    def holds_scale(column: np.ndarray) -> bool:
        return any((column[y : y + len(scale)] == scale).all() for y in range(len(column) - len(scale) + 1))

    bars = [x for x in range(image.shape[1]) if holds_scale(image[:, x])]
    assert bars and min(bars) > 4 * 18  # right of the cells, not one of them

"""``python evaluate.py`` as a user runs it: a run of experiment=gpt scored on the built-in tasks,
results.json + report.md in the run folder, the table printed, and bad input as one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_lab.callbacks.evaluation import EvaluationTasks
from llm_lab.loggers import dashboard_tag
from tests.conftest import TINY_GPT_128, WORKDIR, run_process, run_train


@pytest.fixture(scope="module")
def gpt_run() -> Path:
    """A few steps of a tiny experiment=gpt run, with a window that holds docs_mc's endings."""
    folder = WORKDIR / "eval_gpt_run"
    done = run_train(
        *TINY_GPT_128,
        "trainer.max_steps=2",
        f"hydra.run.dir={folder}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def test_the_gpt_experiment_logs_validation_bits_per_byte(gpt_run: Path) -> None:
    """The evaluation callback of experiment=gpt: eval/bpb/* in the logger and in metrics.json,
    equal to what evaluate.py reports for the same checkpoint."""
    logged = next(gpt_run.glob("csv/**/metrics.csv")).read_text(encoding="utf-8")
    assert "eval/bpb/bits_per_byte" in logged and "eval/bpb/unigram_bits_per_byte" in logged
    metrics = json.loads((gpt_run / "metrics.json").read_text(encoding="utf-8"))
    # In TensorBoard they are a group of their own after the losses (eval/ would open first).
    assert dashboard_tag("eval/bpb/bits_per_byte") == "tasks/bpb/bits_per_byte"
    logged = {key for key in metrics if key.startswith("eval/")}
    assert "eval/bpb/bits_per_byte" in logged and logged <= set(
        EvaluationTasks.LOGGED
    )  # what preflight knows
    out = WORKDIR / "eval_bpb_only"
    done = run_train(f"init_from={gpt_run}", "tasks=[bpb]", f"hydra.run.dir={out}", script="evaluate.py")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert metrics["eval/bpb/bits_per_byte"] == pytest.approx(results["bpb"]["bits_per_byte"], rel=1e-5)


def test_evaluate_writes_results_and_prints_the_table(gpt_run: Path) -> None:
    out = WORKDIR / "eval_out"
    done = run_train(
        f"init_from={gpt_run}",
        "tasks=[bpb,docs_mc,docs_cloze]",
        "limit=16",
        f"hydra.run.dir={out}",
        script="evaluate.py",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results) == ["bpb", "docs_mc", "docs_cloze"]
    assert results["docs_mc"]["n"] == results["docs_cloze"]["n"] == 16
    assert results["docs_mc"]["random_acc"] == 0.25
    assert 0 <= results["docs_mc"]["acc_norm"] <= 1 and 0 <= results["docs_cloze"]["acc"] <= 1
    bpb = results["bpb"]
    assert bpb["n"] >= 1 and bpb["bits_per_byte"] > 0 and bpb["unigram_bits_per_byte"] > 0
    table = (out / "report.md").read_text(encoding="utf-8")
    assert "| bpb " in table and "unigram" in table and str(gpt_run) in table
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines]
    assert ["docs_mc", "acc_norm"] in [row[:2] for row in rows]
    assert "results.json" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks=[nope]"], "error: tasks: 'nope' is neither a built-in task nor an existing file"),
        (["limit=0"], "error: limit: 0 < 1"),
        (["tasks=bpb"], "error: tasks: 'bpb' is not a list of task names"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(gpt_run: Path, args: list[str], message: str) -> None:
    done = run_train(
        f"init_from={gpt_run}", *args, f"hydra.run.dir={WORKDIR / 'eval_bad'}", script="evaluate.py"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr


def test_a_bad_task_file_names_the_file_and_row(gpt_run: Path, tmp_path: Path) -> None:
    task = tmp_path / "mine.jsonl"
    task.write_text('{"ctx": "A", "endings": ["b.", "c."], "label": 5}\n', encoding="utf-8")
    done = run_train(
        f"init_from={gpt_run}", f"tasks=[{task}]", f"hydra.run.dir={tmp_path / 'out'}", script="evaluate.py"
    )
    assert done.returncode == 2
    assert f"error: {task}, row 1: label 5 is out of range for 2 endings" in done.stderr


def test_a_model_folder_without_a_tokenizer_is_one_line(gpt_run: Path, tmp_path: Path) -> None:
    from llm_lab.models.hf import save_hf
    from llm_lab.models.pretrained import load_model

    save_hf(load_model(gpt_run).net, tmp_path / "hf")
    done = run_train(
        f"init_from={tmp_path / 'hf'}", f"hydra.run.dir={tmp_path / 'out'}", script="evaluate.py"
    )
    assert done.returncode == 2
    assert "no tokenizer.json beside the model" in done.stderr and "tokenizer_path=" in done.stderr


def test_a_fresh_interpreter_runs_evaluate_py_as_typed(gpt_run: Path) -> None:
    """As a user types it, in a new process: conf/ is composed with the lab's resolvers registered
    by evaluate.py itself (the in-process tests share the test session's)."""
    done = run_process(
        f"init_from={gpt_run}", "limit=0", f"hydra.run.dir={WORKDIR / 'eval_fresh'}", script="evaluate.py"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        done.stderr.strip().splitlines()[-1] == "error: limit: 0 < 1 (e.g. limit=100, or null for every item)"
    )


def test_a_hugging_face_multiple_choice_dataset_runs_from_the_command_line(
    gpt_run: Path, tmp_path: Path
) -> None:
    """``tasks=[hf:<folder saved by datasets>]`` with its columns mapped on the command line."""
    import datasets

    data = {
        "question": ["x = 1 +", "def f():"],
        "options": [[" 1", " pass"], [" 1", " pass"]],
        "answer": [0, 1],
    }
    folder = tmp_path / "qa"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(data)}).save_to_disk(str(folder))
    out = tmp_path / "out"
    mapping = ["hub_columns.ctx=question", "hub_columns.endings=options", "hub_columns.label=answer"]
    args = [f"init_from={gpt_run}", f"tasks=[hf:{folder}]", *mapping, f"hydra.run.dir={out}"]
    done = run_train(*args, script="evaluate.py")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["hf:qa"]["n"] == 2 and results["hf:qa"]["random_acc"] == 0.5
    refused = run_train(
        f"init_from={gpt_run}", f"tasks=[hf:{folder}]", f"hydra.run.dir={out}_2", script="evaluate.py"
    )
    assert (
        refused.returncode == 2
        and "its columns: question, options, answer" in refused.stderr.splitlines()[-1]
    )

"""``python train.py experiment=instruct`` as README writes it (the newest experiment=gpt run as the
starting model), and its bad input: one line naming the file, row and key, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_GPT_128, WORKDIR, run_train

from llm_lab.lit.instruct import InstructLM

# A tiny run: few examples, few answers, a validation batch.
QUICK = [
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "data.max_examples=16",
    "model.max_responses=2",
    "model.max_new_tokens=4",
    "logger=csv",
]


@pytest.fixture(scope="module")
def log_dir() -> Path:
    """A folder of runs holding one finished experiment=gpt run (a tiny one, 128-token context)."""
    folder = WORKDIR / "instruct_runs"
    done = run_train(
        *TINY_GPT_128,
        "trainer.max_steps=2",
        f"paths.log_dir={folder}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def test_the_readme_command_tunes_the_newest_gpt_run_and_scores_it(log_dir: Path) -> None:
    done = run_train("experiment=instruct", f"paths.log_dir={log_dir}", *QUICK)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = [
        r
        for r in (log_dir / "instruct" / "runs").iterdir()
        if (r / "template.json").exists() and not (r / "adapter").exists()
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    tested = {key for key in metrics if key.startswith("test/")}
    assert tested == {name for name in InstructLM.LOGGED if name.startswith("test/") and "judge" not in name}
    rows = [json.loads(line) for line in (run / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["instruction"] and "response_before" in r for r in rows)
    # The run folder holds what the chat needs: the template and the tokenizer with its tokens.
    assert json.loads((run / "template.json").read_text()) == {"name": "chatml"}
    assert "<|im_start|>" in (run / "tokenizer.json").read_text()
    answer = run_train(
        f"init_from={run}", "prompt='What does `os.getcwd` do?'", "max_new_tokens=4", script="generate.py"
    )
    assert answer.returncode == 0, answer.stderr[-2000:]


def test_before_and_after_are_scored_on_the_same_test_batches(log_dir: Path) -> None:
    """With a learning rate of 0 the weights never move, so the NLL before tuning must equal the
    one after, also when ``debug=fast`` scores only 2 test batches."""
    done = run_train(
        "experiment=instruct",
        f"paths.log_dir={log_dir}",
        "optimizer.lr=0",
        "debug=fast",  # scores 2 test batches (trainer.limit_test_batches=2)
        "hydra.run.dir=${paths.log_dir}/instruct/unmoved",
        *QUICK,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((log_dir / "instruct" / "unmoved" / "metrics.json").read_text())
    assert metrics["test/response_nll_before"] == pytest.approx(metrics["test/response_nll"], rel=1e-5)


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (
            [{"instruction": "Name a fruit.", "output": "An apple."}, {"instruction": "Name a tree."}],
            ["row 2", "'output'"],
        ),
        (
            [{"instruction": "Name a fruit.", "output": "An apple."}, {"messages": []}],
            ["row 2", "'messages'", "one format per file"],
        ),
        ([{"instruction": "word " * 300, "output": "yes"}] * 10, ["row", "longer than the context"]),
    ],
    ids=["no output", "mixed formats", "prompt too long"],
)
def test_bad_rows_are_one_line_and_exit_2(
    log_dir: Path, tmp_path: Path, rows: list, words: list[str]
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_train("experiment=instruct", f"paths.log_dir={log_dir}", f"data.path={path}", *QUICK)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert str(path) in line and all(word in line for word in words)


def test_no_starting_model_is_refused_before_anything_loads(log_dir: Path) -> None:
    done = run_train("experiment=instruct", f"paths.log_dir={log_dir}", "init_from=null", "template=phi3")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: init_from: instruction tuning starts from a pretrained model")


def test_a_lora_run_exports_its_adapter_and_its_checkpoint_chats(log_dir: Path) -> None:
    done = run_train("experiment=instruct", f"paths.log_dir={log_dir}", "finetune.trainable=lora", *QUICK)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = [r for r in (log_dir / "instruct" / "runs").iterdir() if (r / "adapter").exists()]
    assert {"base_hf", "adapter", "hf"} <= {p.name for p in run.iterdir()}
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == (run / "base_hf").resolve()
    # The checkpoint (read weights-only) rebuilds the tuned model with its adapters merged.
    answer = run_train(f"init_from={run}", "prompt=hello", "max_new_tokens=4", script="generate.py")
    assert answer.returncode == 0, answer.stderr[-2000:]

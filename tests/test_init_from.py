"""``init_from``: a run starts from a pretrained model — a run folder, or an experiment's name
meaning its newest finished run — and evaluate.py reads the name by the same rule; what cannot be
started from is one line naming init_from, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_GPT, run_train


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where a user ran ``python train.py experiment=gpt`` (tiny, 2 steps) once."""
    cwd = tmp_path_factory.mktemp("init_from")
    done = run_train(*TINY_GPT, "trainer.max_steps=2", cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return cwd


def newest_run(cwd: Path) -> Path:
    return max((cwd / "outputs" / "gpt" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)


def test_an_experiment_name_starts_from_its_newest_finished_run(workdir: Path) -> None:
    """init_from=gpt loads the newest gpt run: with a learning rate of 0 the weights after a step
    are exactly the pretrained ones (and the run's tokenizer is the pretrained run's)."""
    pretrained = newest_run(workdir)
    out = workdir / "continued"
    done = run_train(
        *TINY_GPT,
        "init_from=gpt",
        "optimizer.lr=0",
        "trainer.max_steps=1",
        "callbacks.evaluation=null",
        f"hydra.run.dir={out}",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before = torch.load(pretrained / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (out / "tokenizer.json").read_bytes() == (pretrained / "tokenizer.json").read_bytes()


def test_evaluate_reads_an_experiment_name_by_the_same_rule(workdir: Path) -> None:
    out = workdir / "scored"
    done = run_train(
        "init_from=gpt", "tasks=[bpb]", "limit=2", f"hydra.run.dir={out}", script="evaluate.py", cwd=workdir
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith(f"# Evaluation of {newest_run(workdir)}\n")


def test_an_experiment_without_a_finished_run_is_one_line(tmp_path: Path) -> None:
    done = run_train(*TINY_GPT, "init_from=gpt", cwd=tmp_path)
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "init_from:" in line and "run python train.py experiment=gpt first" in line


def test_a_stage_that_trains_from_scratch_refuses_init_from(workdir: Path) -> None:
    done = run_train("experiment=cbow", f"init_from={newest_run(workdir)}", cwd=workdir)
    assert done.returncode == 2 and "init_from:" in done.stderr and "from scratch" in done.stderr


def test_a_cbow_run_is_no_starting_model(workdir: Path, tmp_path: Path) -> None:
    """A run folder whose checkpoint holds CBoW's vectors, not a GPT: refused in one line."""
    run = tmp_path / "cbow_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("model:\n  _target_: llm_lab.lit.cbow.CBoWModule\n")
    torch.save(
        {"state_dict": {"net.emb.weight": torch.zeros(3, 2)}, "global_step": 5},
        run / "checkpoints" / "last.ckpt",
    )
    done = run_train(*TINY_GPT, f"init_from={run}", "trainer.max_steps=1", cwd=workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "init_from:" in line and "CBoWModule run" in line

"""Ctrl-C and pre-emption: a real ``train.py`` process gets SIGINT or SIGTERM mid-run, saves the
step it is in, says how to resume, and the resumed run ends with the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
from conftest import ENV, ROOT, TINY_GPT, WORKDIR, Regression, final_weights, pasted, run_train, signal_at
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.callbacks.checkpoint import LastCheckpoint
from llm_lab.console import number

STEPS = 30
RUN = [
    *TINY_GPT,
    "data.batch_size=8",
    f"trainer.max_steps={STEPS}",
    "trainer.limit_train_batches=7",  # several epochs: the interruption lands inside one
    "trainer.deterministic=true",
    "callbacks.model_checkpoint.every_n_train_steps=25",  # a periodic save far from the signal
    "callbacks.text_samples.every_n_steps=10",
    "callbacks.text_samples.max_new_tokens=4",
    "progress_every_n_steps=1",  # one progress line per step: the test waits for step 5
]


@pytest.mark.parametrize("signum", [signal.SIGTERM], ids=["SIGTERM"])  # SIGINT: same handler, below
def test_a_signal_saves_the_current_step_and_the_printed_command_resumes_exactly(signum: int, tmp_path: Path):
    run_dir, straight = tmp_path / "interrupted", tmp_path / "straight"
    stopped = signal_at(f"step 5/{STEPS}", signum, *RUN, f"hydra.run.dir={run_dir}")
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    assert not (run_dir / "FAILED").exists() and not (run_dir / "metrics.json").exists()
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 5 <= step < STEPS and step % 7 != 0  # mid-run, mid-epoch, not at a periodic save

    # The last line says how to resume: run exactly that, from where the run was started.
    printed = stopped.stderr.strip().splitlines()[-1].strip()
    assert printed.startswith(f"python {ROOT / 'train.py'}") and printed.endswith(f"ckpt_path={run_dir}")
    # So does the run folder's train.log, for whoever finds the folder later.
    said = stopped.stderr[stopped.stderr.rindex("interrupted: ") :].rstrip()
    assert (run_dir / "train.log").read_text().rstrip().endswith(f"[WARNING] {said}")
    # The signal went to a real process; the resume needs none of its own (run_train: the same
    # command line, in this interpreter).
    resumed = run_train(*pasted(printed)[2:], cwd=WORKDIR)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {step + 1}/{STEPS}" in resumed.stdout  # the progress counts on from the checkpoint

    reference = run_train(*RUN, f"hydra.run.dir={straight}")
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected, actual = final_weights(straight, STEPS), final_weights(run_dir, STEPS)
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("signum", [signal.SIGINT], ids=["SIGINT"])  # SIGTERM: the tests above
def test_a_signal_while_the_tokenizer_trains_says_there_is_nothing_to_resume(signum: int, tmp_path: Path):
    # A tokenizer cache of its own: the tokenizer is trained, not found (the whole corpus: seconds).
    run = ["experiment=gpt", "model.net.size=lab-tiny", "logger=csv", f"paths.cache_dir={tmp_path / 'cache'}"]
    run_dir = tmp_path / "run"
    stopped = signal_at("tokenizer (cached for the next runs)", signum, *run, f"hydra.run.dir={run_dir}")
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    said = "interrupted before the first training step: nothing to resume"
    assert stopped.stderr.strip().splitlines()[-1] == said
    assert (run_dir / "train.log").read_text().rstrip().endswith(f"[WARNING] {said}")
    assert not (run_dir / "FAILED").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_a_signal_after_training_resumes_from_the_saved_checkpoint(tmp_path: Path):
    # The final validation and the test stage run after the training loop, outside its handler.
    run = ["experiment=gpt", "model.net.size=lab-tiny", "tokenizer.vocab_size=300", "data.context_length=32"]
    run += ["data.stride=32"]  # gpt.yaml's stride of 64 would skip tokens of 32-token windows
    run += ["logger=csv", "trainer.max_steps=3", "test=true"]
    # train.py's own validation of the last step (its line), before the test stage.
    stopped = signal_at("validation at step 3", signal.SIGTERM, *run, f"hydra.run.dir={tmp_path}")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    lines = stopped.stderr.strip().splitlines()
    assert lines[-2] == "interrupted: SIGTERM; resume with:" and not (tmp_path / "metrics.json").exists()
    printed = lines[-1].strip()
    assert printed.endswith(f"ckpt_path={tmp_path}")
    resumed = subprocess.run(pasted(printed), cwd=WORKDIR, capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test/loss" in json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.slow
def test_a_signal_in_a_grid_sweep_names_the_jobs_that_did_not_run_and_how_to_run_them(tmp_path: Path):
    cbow = ["experiment=cbow", "corpus.max_documents=20", "model.embed_dim=8", "logger=csv"]
    run = [*cbow, "trainer.max_steps=200", "progress_every_n_steps=1"]
    stopped = signal_at("step 3/", signal.SIGTERM, "-m", *run, "seed=1,2", f"hydra.sweep.dir={tmp_path}")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert (tmp_path / "0" / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "1").exists()
    # The summary of the sweep so far: the job cut off is listed as unfinished.
    assert [(row[1], row[-2], row[-1]) for row in summary_rows(tmp_path)] == [("0", "", "unfinished")]
    lines = stopped.stderr.strip().splitlines()
    assert lines[-2] == "the sweep stopped: job 1 of 2 did not run; run each with (or the whole sweep again):"
    printed = lines[-1].strip()
    assert printed.startswith(f"python {ROOT / 'train.py'} ") and "seed=2" in printed.split()
    assert "seed=1" not in printed.split() and "-m" not in printed.split()
    # The printed command runs the missing job, into the folder the sweep would have given it.
    ran = subprocess.run(
        [*pasted(printed), "trainer.max_steps=3"], cwd=WORKDIR, capture_output=True, text=True, env=ENV
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (tmp_path / "1" / "metrics.json").is_file()
    assert OmegaConf.load(tmp_path / "1" / ".hydra" / "config.yaml").seed == 2


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT], ids=["SIGINT"])  # SIGTERM: the grid sweep test
def test_a_signal_between_two_jobs_of_a_sweep_names_the_jobs_left(tmp_path: Path, signum: int):
    cbow = ["experiment=cbow", "corpus.max_documents=20", "model.embed_dim=8", "logger=csv"]
    # Sent when job 0 prints its last line: it lands as job 0 returns or as Hydra sets up job 1.
    stopped = signal_at(
        "run folder:",
        signum,
        "-m",
        *cbow,
        "trainer.max_steps=5",
        "seed=1,2,3",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    lines = stopped.stderr.strip().splitlines()
    assert (
        lines[-3] == "the sweep stopped: jobs 1-2 of 3 did not run; run each with (or the whole sweep again):"
    )
    assert lines[-2].endswith(f"seed=2 hydra.run.dir={tmp_path / '1'}")
    assert (tmp_path / "0" / "metrics.json").is_file() and not (tmp_path / "1" / "metrics.json").exists()
    # The summary so far ranks the finished job first, with its value.
    loss = json.loads((tmp_path / "0" / "metrics.json").read_text())["val/loss"]
    assert (summary_rows(tmp_path)[0][1], *summary_rows(tmp_path)[0][-2:]) == ("0", number(loss), "")


def summary_rows(sweep_dir: Path) -> list[list[str]]:
    """The cells of each row of a sweep's summary.md (rank, job, the swept values, metric, status)."""
    lines = (sweep_dir / "summary.md").read_text().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ")][
        1:
    ]


@pytest.mark.slow
def test_a_signal_in_an_optuna_study_says_to_run_the_same_command_which_resumes_it(tmp_path: Path):
    cbow = ["experiment=cbow", "corpus.max_documents=20", "model.embed_dim=8", "logger=csv"]
    run = ["-m", *cbow, "hparams_search=cbow_optuna", "hydra.sweeper.n_trials=2", "trainer.max_steps=200"]
    run += ["progress_every_n_steps=1", f"hydra.sweep.dir={tmp_path}"]
    stopped = signal_at("step 3/", signal.SIGTERM, *run)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    lines = stopped.stderr.strip().splitlines()
    assert lines[-3].endswith("; the trial starts again when its study resumes")  # no resume command
    assert lines[-2] == "the sweep stopped at job 0; run the same command to go on:"
    resumed = subprocess.run(pasted(lines[-1]), cwd=WORKDIR, capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = optuna.load_study(study_name="cbow", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_last_checkpoint_is_also_written_on_wall_clock_time(tmp_path: Path):
    """With a clock that advances 4 minutes at every reading (one per step, one per save),
    every_minutes=10 saves after steps 3, 6 and 9."""
    minutes = iter(range(0, 10_000, 4))
    saved: list[int] = []

    class Recording(LastCheckpoint):
        clock = staticmethod(lambda: 60.0 * next(minutes))

        def _save_last_checkpoint(self, trainer, monitor_candidates):
            saved.append(trainer.global_step)
            super()._save_last_checkpoint(trainer, monitor_candidates)

    callback = Recording(dirpath=tmp_path, every_minutes=10)
    data = DataLoader(TensorDataset(torch.randn(64, 2), torch.randn(64, 1)), batch_size=4)
    trainer = L.Trainer(max_steps=10, callbacks=[callback], logger=False, enable_progress_bar=False)
    trainer.fit(Regression(), data)
    assert saved[:-1] == [3, 6, 9] and saved[-1] == 10  # ... and once more after the final step
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 10


# Every entry point, each signal at least once (the shell's handling is the same for both).
@pytest.mark.parametrize(
    ("script", "signum"),
    [("train.py", signal.SIGINT), ("generate.py", signal.SIGTERM), ("evaluate.py", signal.SIGINT)],
    ids=["train.py-SIGINT", "generate.py-SIGTERM", "evaluate.py-SIGINT"],
)
def test_a_signal_while_the_program_still_imports_is_one_line(script: str, signum: int):
    """Ctrl-C in the seconds torch and Lightning take to load: one line and 128 + n, no traceback.
    ``-X importtime`` reports each module once imported: the signal goes when numpy is, inside
    torch's import, long before any of the script's own work."""

    def numpy_imported(line: str) -> bool:
        return line.split("|")[-1].strip() == "numpy"

    flags = ("-X", "importtime")
    stopped = signal_at(
        numpy_imported, signum, "experiment=cbow", script=script, watch="stderr", python_flags=flags
    )
    stderr = stopped.stderr
    said = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    assert stopped.returncode == 128 + signum, stderr[-2000:]
    assert said == [f"interrupted: {signal.Signals(signum).name} while starting: nothing to resume"], said


def test_a_signal_dropped_by_a_destructor_is_raised_again():
    """Python drops an exception raised while a ``__del__`` runs ("Exception ignored in ..."): a
    SIGTERM (or Ctrl-C) landing there was lost and the run went on to its end. The shell raises it
    again until it is caught."""
    from llm_lab.app.shell import Terminated, signals

    class SignalledWhileDeleted:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, inside __del__

    with pytest.raises(Terminated), signals():
        SignalledWhileDeleted()  # made and dropped at once
        for _ in range(100):  # 10 s of work the signal should have stopped
            time.sleep(0.1)

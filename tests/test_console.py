"""What a run prints: the lab's own lines and real warnings on the console, Lightning's routine
notices in the run's train.log only, log lines that leave a live progress bar intact, and a last
line that says where the run folder is."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import struct
import subprocess
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ENV, LIGHTNING_MESSAGES, ROOT, Sweep, command, long_numbers, run_train
from hydra import compose, initialize_config_dir
from tqdm import tqdm

from llm_lab.console import ConsoleHandler

CBOW = ["experiment=cbow", "corpus.max_documents=60", "model.embed_dim=16"]
# Lightning's routine notices: the console leaves them to train.log.
NOTICES = [
    "GPU available:",
    "TPU available:",
    "was configured so validation will run",
    "Loading `train_dataloader` to estimate",
    "Seed set to",
    "Restoring states from the checkpoint",
    "exists and is not empty",  # the checkpoints/ folder, as a resumed run finds it
]


@dataclass
class Runs:
    fresh: subprocess.CompletedProcess[str]  # a CBoW run started in a folder of its own
    resumed: subprocess.CompletedProcess[str]  # the same run resumed in its run folder
    run: Path  # the run folder of the first two
    log: str  # its train.log after both
    moved: subprocess.CompletedProcess[str]  # the run resumed into a new folder
    moved_log: str  # that folder's train.log


@pytest.fixture(scope="module")
def cbow_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    cwd = tmp_path_factory.mktemp("console")
    fresh = run_train(*CBOW, "trainer.max_steps=10", cwd=cwd)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (run,) = (cwd / "outputs" / "cbow" / "runs").iterdir()
    resumed = run_train(*CBOW, "trainer.max_steps=20", f"hydra.run.dir={run}", f"ckpt_path={run}", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (run / "train.log").read_text()
    moved_to = cwd / "moved"
    moved = run_train(*CBOW, "trainer.max_steps=25", f"hydra.run.dir={moved_to}", f"ckpt_path={run}", cwd=cwd)
    assert moved.returncode == 0, moved.stderr[-2000:]
    return Runs(fresh, resumed, run, log, moved, (moved_to / "train.log").read_text())


def console(proc: subprocess.CompletedProcess[str]) -> str:
    """What a command showed on the terminal: its stdout and stderr."""
    return proc.stdout + proc.stderr


def test_lightning_notices_stay_in_train_log(cbow_runs: Runs) -> None:
    for proc in (cbow_runs.fresh, cbow_runs.resumed):
        assert [n for n in NOTICES if n in console(proc)] == []
    assert [n for n in NOTICES if n not in cbow_runs.log] == []
    assert "Restored all states from the checkpoint" in console(cbow_runs.resumed)
    # Resumed into a new folder: Lightning's note about best-k checkpoints it will not reload.
    moved_note = "The dirpath has changed from"
    assert moved_note not in console(cbow_runs.moved) and moved_note in cbow_runs.moved_log


def test_real_warnings_and_the_labs_lines_stay_on_the_console(cbow_runs: Runs) -> None:
    shown = console(cbow_runs.fresh)
    assert "step 1/10" in shown and "validation at step 10 val/loss=" in shown
    assert "wordsim: only" in shown  # the lab's warning: too few evaluation words in the vocabulary


def test_the_last_line_names_the_run_folder_and_how_to_look_at_it(cbow_runs: Runs) -> None:
    expected = f"run folder: outputs/cbow/runs/{cbow_runs.run.name}  (tensorboard --logdir outputs/cbow)"
    assert cbow_runs.fresh.stdout.strip().splitlines()[-1] == expected
    assert cbow_runs.log.strip().splitlines()[-1].endswith(expected)  # the resumed run's, the same


def test_a_sweep_says_each_warning_once_and_lightnings_tables_never(readme_sweep: Sweep) -> None:
    shown = console(readme_sweep.result)
    # Every job finds the same too-small vocabulary: the console says it once, each train.log has it.
    for warning in ("wordsim: only", "analogy: only"):
        assert shown.count(warning) == 1, shown[-3000:]
    logs = sorted(readme_sweep.outputs.glob("cbow/multiruns/*/*/train.log"))
    assert len(logs) == 4 and all("wordsim: only" in log.read_text() for log in logs)
    assert [m for m in LIGHTNING_MESSAGES if m in shown] == []
    assert long_numbers(shown) == []  # 4 significant digits, one notation
    assert len(re.findall(r"^test at step 5 .*test/loss=\d", shown, re.M)) == 4  # the lab's line instead


def test_the_console_writes_every_metric_to_4_significant_digits() -> None:
    from llm_lab.console import number

    assert [number(x) for x in (6355.2, 10290.7, 4.15883, 0.0084985, 0.5, 0.0, 2.5e7, 1.2e-7)] == [
        "6355",
        "10290",
        "4.159",
        "0.008499",
        "0.5",
        "0",
        "2.5e+07",
        "1.2e-07",
    ]
    assert long_numbers("a=4.15883 b=10290 c=123500 d=0.0001234 e=1.029e+04 f=2026-12-07") == ["4.15883"]


def test_lightnings_logging_interval_note_shows_only_when_nothing_would_be_logged(tmp_path: Path) -> None:
    # 10 batches an epoch, log every 20 steps: Lightning's note, but the 500-step run logs fine.
    harmless = run_train(
        "experiment=perceptron",
        "logger=csv",
        "trainer.log_every_n_steps=20",
        f"hydra.run.dir={tmp_path / 'a'}",
    )
    assert harmless.returncode == 0, harmless.stderr[-2000:]
    assert "log_every_n_steps" not in console(harmless)
    assert "smaller than the logging interval" in (tmp_path / "a" / "train.log").read_text()
    # 5 steps, log every 20: nothing reaches the loggers, and the console says which key to set.
    short = run_train(
        "experiment=perceptron",
        "logger=csv",
        "trainer.max_steps=5",
        "trainer.log_every_n_steps=20",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    assert short.returncode == 0, short.stderr[-2000:]
    assert "trainer.log_every_n_steps=20 is more than the run's 5 steps" in console(short)


def test_a_log_line_during_a_live_bar_gets_a_line_of_its_own() -> None:
    out = io.StringIO()
    logger = logging.getLogger("test_console.live_bar")
    logger.propagate = False
    logger.addHandler(ConsoleHandler(out))
    with tqdm(total=10, file=out, ncols=60, mininterval=0) as bar:
        bar.update(5)
        logger.warning("a line in the middle")
        bar.update(1)
    text = out.getvalue()
    assert "a line in the middle" in re.split(r"[\r\n]", text)
    before, after = text.split("a line in the middle\n")
    assert "5/10" in before and "5/10" in after  # drawn again below the line, then counting on
    assert "6/10" in after


def on_a_terminal(*args: str, cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``python train.py ARGS`` with its stdout and stderr on a pseudo-terminal 120 columns wide,
    as in a user's shell (so Lightning's progress bar is on); its return code and what it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(command("train.py", *args), cwd=cwd, env=ENV, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end is closed: the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow  # a fresh interpreter on a terminal: ~15 s
def test_on_a_terminal_log_lines_do_not_break_the_progress_bar(tmp_path: Path) -> None:
    code, text = on_a_terminal(*CBOW, "trainer.max_steps=10", "logger=csv", cwd=tmp_path)
    assert code == 0, text[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # the bars' cursor moves
    assert "10/10" in text  # the bar was there
    # The warnings logged while the bar is live (validation's) start a line and end it.
    for line in ("wordsim: only", "analogy: only"):
        assert re.search(rf"(^|[\r\n]){re.escape(line)}[^\r\n]*\r?\n", text), (line, text[-3000:])


def test_debug_fast_warns_of_no_warm_up_it_set_itself() -> None:
    """``experiment=gpt``'s 50 warm-up steps are longer than ``debug=fast``'s 5: the preset
    shortens the warm-up with the run, so its smoke run warns of nothing the user set; a warm-up
    the user types is theirs, and is warned about."""
    from functools import partial

    from hydra.utils import get_method

    from llm_lab.lit.base import warmup_notice

    def notice(*overrides: str) -> str | None:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=gpt", "debug=fast", *overrides])
        schedule = partial(get_method(cfg.scheduler._target_), warmup_steps=cfg.scheduler.warmup_steps)
        return warmup_notice(schedule, cfg.trainer.max_steps)

    assert notice() is None
    assert "scheduler.warmup_steps: 50 warm-up steps" in str(notice("scheduler.warmup_steps=50"))

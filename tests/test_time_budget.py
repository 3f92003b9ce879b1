"""Training on a time budget (``trainer.max_time``): the schedule decays over the time, the run ends
with a validation and its checkpoint at min_lr, and a resumed run continues the same budget."""

from __future__ import annotations

import csv
import shlex
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY_GPT, run_train, signal_at

from llm_lab.lit.schedules import linear_decay, warmup_cosine

LR, MIN_RATIO, WARMUP = 0.5, 0.1, 5


def lrs(make_scheduler, steps: int, spent) -> list[float]:
    """The learning rate of each step, with ``spent(step)`` the fraction of the time budget used
    when Lightning steps the scheduler after that step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    now = {"spent": 0.0}
    scheduler = make_scheduler(optimizer, lambda: now["spent"])
    rates = []
    for step in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        now["spent"] = spent(step + 1)
        scheduler.step()
    return rates


@pytest.mark.parametrize("total_steps", [float("inf"), 100, 20])
def test_at_a_steady_pace_the_time_schedule_is_the_step_schedule_of_the_nearer_end(total_steps: float):
    """A budget used at 1/40 per step holds 40 steps: the rates are those of a 40-step run, or of a
    run of max_steps when that ends first."""
    pace = 40

    def timed(optimizer, time_spent):
        return warmup_cosine(optimizer, total_steps, WARMUP, MIN_RATIO, time_spent=time_spent)

    def counted(optimizer, _):
        return warmup_cosine(optimizer, min(total_steps, pace), WARMUP, MIN_RATIO)

    expected = lrs(counted, pace + 3, lambda s: 0.0)
    assert lrs(timed, pace + 3, lambda s: s / pace) == pytest.approx(expected, abs=1e-12)
    assert expected[-1] == pytest.approx(LR * MIN_RATIO)  # the floor once the time is up


def test_linear_decay_reaches_its_floor_when_the_time_is_up():
    rates = lrs(
        lambda opt, spent: linear_decay(opt, float("inf"), MIN_RATIO, time_spent=spent), 30, lambda s: s / 20
    )
    assert rates[10] == pytest.approx(LR * 0.5) and rates[20] == pytest.approx(LR * MIN_RATIO)


def test_a_run_bounded_by_nothing_is_refused_with_the_keys_that_bound_it(tmp_path: Path):
    result = run_train(
        *TINY_GPT, "trainer.max_steps=-1", "trainer.max_epochs=-1", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer.max_steps:") and "trainer.max_time" in last


BUDGET = 8  # seconds
RUN = [
    *TINY_GPT,
    "trainer.max_steps=-1",
    f"trainer.max_time={{seconds:{BUDGET}}}",
    "scheduler.warmup_steps=3",
    "trainer.log_every_n_steps=1",
    "progress_every_n_steps=1",
    "callbacks.text_samples=null",
    "data.batch_size=8",
]


def train_state(run_dir: Path) -> tuple[int, float, float]:
    """(step, training seconds of the budget used, learning rate) of a run's last.ckpt."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    return ckpt["global_step"], ckpt["callbacks"]["Timer"]["time_elapsed"]["train"], lr


@pytest.mark.slow
def test_an_interrupted_budget_resumes_where_it_stopped_and_ends_at_min_lr(tmp_path: Path):
    run_dir = tmp_path / "run"
    # The progress lines count the budget down: stop 3-4 s into it.
    stopped = signal_at("(0:04 left)", signal.SIGINT, *RUN, f"hydra.run.dir={run_dir}")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    step, used, lr = train_state(run_dir)
    assert 3 <= used < BUDGET

    resumed = run_train(*shlex.split(stopped.stderr.strip().splitlines()[-1])[2:])  # the printed command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final_step, final_used, _ = train_state(run_dir)
    # The resumed run trained for what was left of the budget, not for a new one.
    assert final_step > step and BUDGET <= final_used < BUDGET + used
    with (run_dir / "csv" / "metrics.csv").open() as f:  # both parts' metrics: the resumed run's
        rows = [row for row in csv.DictReader(f) if int(row["step"]) >= step]
    rates = [float(r["lr/AdamW"]) for r in rows if r.get("lr/AdamW")]
    peak, floor = 1.0e-3, 1.0e-4  # experiment=gpt: optimizer.lr, x scheduler.min_lr_ratio
    assert rates[0] <= lr * (1 + 1e-6)  # the cosine goes on down from where it was stopped
    assert rates[-1] == pytest.approx(floor, abs=0.05 * (peak - floor))  # and ends at its floor
    assert [r["step"] for r in rows if r.get("val/loss")] == [str(final_step - 1)]  # final validation

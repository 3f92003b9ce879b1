"""Linear warm-up + cosine decay, both warm-up conventions, at every step: the plain function, the
LambdaLR that Lightning steps, and the config's default."""

from __future__ import annotations

import math
from functools import partial
from itertools import pairwise

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from llm_lab.errors import ArgumentError
from llm_lab.lit.base import warmup_notice
from llm_lab.lit.schedules import linear_decay, warmup_cosine
from llm_lab.nn.lr_schedule import WARMUP_STARTS, lr_warmup_cosine

MAX_LR, MIN_LR, WARMUP, CYCLE = 2.0, 0.2, 7, 21


def _expected(step: int, warmup_start: str) -> float:
    """The schedule from its definition, written independently of the code under test: the ramp
    goes through (0, first) and reaches MAX_LR at the peak step; a cosine half-period from MAX_LR at
    WARMUP down to MIN_LR at CYCLE; MIN_LR afterwards."""
    first, peak = (0.0, WARMUP) if warmup_start == "zero" else (MAX_LR / WARMUP, WARMUP - 1)
    if step <= peak:
        return first + (MAX_LR - first) * step / peak
    if step < WARMUP:  # "one_step" holds the peak for one step before the decay starts
        return MAX_LR
    if step > CYCLE:
        return MIN_LR
    angle = math.pi * (step - WARMUP) / (CYCLE - WARMUP)
    return MIN_LR + (MAX_LR - MIN_LR) * (math.cos(angle) + 1) / 2


@pytest.mark.parametrize("warmup_start", WARMUP_STARTS)
def test_every_step_follows_the_definition(warmup_start: str) -> None:
    for step in range(CYCLE + 5):
        actual = lr_warmup_cosine(step, MAX_LR, MIN_LR, WARMUP, CYCLE, warmup_start)  # type: ignore[arg-type]
        assert actual == pytest.approx(_expected(step, warmup_start), abs=1e-12), step


def test_the_two_conventions_differ_by_one_warmup_step_and_agree_after_it() -> None:
    for step in range(CYCLE + 3):
        zero = lr_warmup_cosine(step, MAX_LR, MIN_LR, WARMUP, CYCLE, "zero")
        one = lr_warmup_cosine(step, MAX_LR, MIN_LR, WARMUP, CYCLE, "one_step")
        if step < WARMUP:
            assert one - zero == pytest.approx(MAX_LR / WARMUP)
        else:
            assert one == zero
    assert lr_warmup_cosine(0, MAX_LR, MIN_LR, WARMUP, CYCLE, "zero") == 0.0


def test_no_warmup_starts_at_the_peak_and_decays_monotonically() -> None:
    lrs = [lr_warmup_cosine(s, MAX_LR, MIN_LR, 0, CYCLE, "zero") for s in range(CYCLE + 2)]
    assert lrs[0] == MAX_LR and lrs[-1] == MIN_LR
    assert all(a > b for a, b in pairwise(lrs[: CYCLE + 1]))


@pytest.mark.parametrize("warmup_start", WARMUP_STARTS)
def test_the_lambda_lr_sets_the_scheduled_rate_at_every_optimizer_step(warmup_start: str) -> None:
    """Lightning steps the scheduler once per optimizer step; the group's lr is then
    base × lr_warmup_cosine(step, 1, min_lr_ratio, ...) with the Trainer's total as the cycle end."""
    base, ratio = 0.5, MIN_LR / MAX_LR
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = warmup_cosine(optimizer, CYCLE, WARMUP, ratio, warmup_start)  # type: ignore[arg-type]
    for step in range(CYCLE + 3):
        expected = base * _expected(step, warmup_start) / MAX_LR
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        optimizer.step()
        scheduler.step()


def test_the_config_default_is_the_convention_its_comment_names() -> None:
    """conf/scheduler/warmup_cosine.yaml says step 0 already learns, at lr / warmup_steps."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["scheduler=warmup_cosine", "optimizer.lr=0.3"])
    line = next(
        x
        for x in (ROOT / "conf/scheduler/warmup_cosine.yaml").read_text().splitlines()
        if "warmup_start:" in x
    )
    assert line.split("#")[1].strip().startswith(f"{cfg.scheduler.warmup_start}: ")
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    instantiate(cfg.scheduler)(optimizer, total_steps=1000)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.3 / cfg.scheduler.warmup_steps)


def test_bad_arguments_name_themselves() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for kwargs, arg in (
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_start": "half"}, "warmup_start"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ):
        with pytest.raises(ArgumentError) as err:
            warmup_cosine(optimizer, 100, **kwargs)  # type: ignore[arg-type]
        assert err.value.arg == arg


def test_a_warm_up_longer_than_the_run_is_noticed():
    scheduler = partial(warmup_cosine, warmup_steps=1000)
    notice = warmup_notice(scheduler, 3)
    assert notice is not None and notice.startswith("scheduler.warmup_steps: 1000 warm-up steps")
    assert "run's 3 optimizer steps" in notice and "never reaches its peak" in notice
    assert warmup_notice(scheduler, 1000) is None  # the peak is reached at the last step
    assert warmup_notice(scheduler, math.inf) is None  # a time budget: the length is not known
    assert warmup_notice(partial(linear_decay), 3) is None  # no warm-up at all

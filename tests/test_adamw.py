"""The lab's AdamW takes the same steps as torch.optim.AdamW, per param group, and its state_dict
resumes a run exactly."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.adamw import AdamW
from llm_lab.nn.weight_decay import weight_decay_groups

HYPER = {"lr": 3e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}


def _model() -> nn.Module:
    """Linear weights (decayed) plus an embedding, biases and a LayerNorm (not decayed), float64."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(20, 8), nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 20)
    ).double()


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    """Next-token-style steps on batches that depend only on the step number."""
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, y = torch.randint(0, 20, (4, 6), generator=g), torch.randint(0, 20, (4, 6), generator=g)
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 20), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _after(optimizer_cls: Callable[..., torch.optim.Optimizer], steps: int) -> dict[str, torch.Tensor]:
    model = _model()
    _train(model, optimizer_cls(weight_decay_groups(model), **HYPER), range(steps))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_100_steps_with_two_param_groups_match_torch_adamw() -> None:
    ours, reference = _after(AdamW, 100), _after(torch.optim.AdamW, 100)
    start = _model().state_dict()
    for name, tensor in reference.items():
        assert not torch.allclose(tensor, start[name], atol=1e-3), f"{name} did not train"
        torch.testing.assert_close(ours[name], tensor, atol=1e-6, rtol=0, msg=name)


def test_each_group_keeps_its_own_weight_decay() -> None:
    """With no gradient at all, AdamW only decays: θ·(1 - lr·wd)^t in the decayed group, θ elsewhere."""
    decayed, kept = nn.Parameter(torch.ones(3, dtype=torch.float64)), nn.Parameter(torch.ones(3))
    optimizer = AdamW([{"params": [decayed]}, {"params": [kept], "weight_decay": 0.0}], **HYPER)
    for _ in range(5):
        decayed.grad, kept.grad = torch.zeros_like(decayed), torch.zeros_like(kept)
        optimizer.step()
    torch.testing.assert_close(decayed.detach(), torch.full((3,), (1 - 3e-2 * 0.1) ** 5, dtype=torch.float64))
    torch.testing.assert_close(kept.detach(), torch.ones(3))


def test_the_first_step_moves_every_weight_by_lr() -> None:
    """Bias correction (Kingma & Ba 2015, §3): at t = 1, m̂ = g and sqrt(v̂) = |g|, so the step is
    lr·sign(g) whatever the gradient's scale; without it the step would be (1-β1)/sqrt(1-β2) × lr."""
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    p.grad = torch.tensor([1e-3, -5.0, 200.0, -0.2], dtype=torch.float64)
    AdamW([p], lr=0.01, eps=0.0, weight_decay=0.0).step()
    torch.testing.assert_close(p.detach(), -0.01 * p.grad.sign(), atol=1e-15, rtol=0)


def test_a_schedule_changing_the_groups_lr_is_followed() -> None:
    """LambdaLR writes each group's ``lr`` before every step: the optimizer must read it there."""
    results = []
    for cls in (AdamW, torch.optim.AdamW):
        model = _model()
        optimizer = cls(weight_decay_groups(model), **HYPER)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        for step in range(20):
            _train(model, optimizer, range(step, step + 1))
            scheduler.step()
        results.append(model.state_dict())
    for name, tensor in results[1].items():
        torch.testing.assert_close(results[0][name], tensor, atol=1e-6, rtol=0, msg=name)


def _state_round_trip(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state: dict[str, Any] = torch.load(buffer, weights_only=True)
    return state


def test_50_steps_saved_and_loaded_into_a_fresh_optimizer_then_50_more_equal_100_steps() -> None:
    straight = _after(AdamW, 100)
    model = _model()
    optimizer = AdamW(weight_decay_groups(model), **HYPER)
    _train(model, optimizer, range(50))
    saved_optimizer, saved_model = _state_round_trip(optimizer), model.state_dict()

    resumed = _model()  # fresh weights and a fresh optimizer, as a new process would have
    resumed.load_state_dict(saved_model)
    fresh = AdamW(weight_decay_groups(resumed), **HYPER)
    fresh.load_state_dict(saved_optimizer)
    _train(resumed, fresh, range(50, 100))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, atol=0, rtol=0, msg=name)


def test_state_dict_holds_the_moments_and_the_step_of_each_parameter() -> None:
    model = _model()
    optimizer = AdamW(weight_decay_groups(model), **HYPER)
    _train(model, optimizer, range(3))
    state = optimizer.state_dict()
    assert [g["weight_decay"] for g in state["param_groups"]] == [0.1, 0.0]
    assert len(state["state"]) == len(list(model.parameters()))
    for entry in state["state"].values():
        assert entry["step"] == 3 and set(entry) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"betas": (-0.1, 0.9)}, "betas"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_bad_hyperparameters_name_their_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ArgumentError) as err:
        AdamW([nn.Parameter(torch.zeros(1))], **kwargs)
    assert err.value.arg == arg

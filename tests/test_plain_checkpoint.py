"""save_checkpoint / load_checkpoint resume a hand-written loop with the lab's AdamW exactly, through
a path or a file object, and refuse a checkpoint that carries code."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from llm_lab.nn.adamw import AdamW
from llm_lab.nn.checkpoint import load_checkpoint, save_checkpoint


def _fresh() -> tuple[nn.Module, AdamW]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    return model, AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def _train(model: nn.Module, optimizer: AdamW, steps: range) -> None:
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, y = torch.rand(8, 10, generator=g), torch.rand(8, 5, generator=g)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).sum().backward()
        optimizer.step()


@pytest.mark.parametrize("where", ["path", "file object"])
def test_a_resumed_loop_ends_where_an_uninterrupted_one_does(where: str, tmp_path: Path) -> None:
    straight, straight_opt = _fresh()
    _train(straight, straight_opt, range(20))

    model, optimizer = _fresh()
    _train(model, optimizer, range(10))
    out: Path | io.BytesIO = tmp_path / "ckpt.pt" if where == "path" else io.BytesIO()
    save_checkpoint(model, optimizer, 10, out)
    if isinstance(out, io.BytesIO):
        out.seek(0)

    torch.manual_seed(123)  # different initial weights: everything must come from the checkpoint
    resumed = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    resumed_opt = AdamW(resumed.parameters(), lr=1e-2, weight_decay=0.01)
    iteration = load_checkpoint(out, resumed, resumed_opt)
    assert iteration == 10
    _train(resumed, resumed_opt, range(iteration, 20))
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, atol=0, rtol=0, msg=name)


def test_a_checkpoint_carrying_code_is_refused(tmp_path: Path) -> None:
    model, optimizer = _fresh()
    path = tmp_path / "evil.pt"
    torch.save({"model": model.state_dict(), "optimizer": print, "iteration": 1}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(path, model, optimizer)

"""The lab's global-norm clipping equals torch.nn.utils.clip_grad_norm_, alone and as the body of
Lightning's ``configure_gradient_clipping`` hook."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.nn.clipping import clip_grad_norm


def _params_with_grads(scale: float) -> list[nn.Parameter]:
    """Five float64 tensors with gradients, and one frozen tensor without a gradient."""
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3, dtype=torch.float64, generator=g)) for _ in range(6)]
    params[-1].requires_grad_(False)
    for p in params[:-1]:
        p.grad = torch.randn(p.shape, dtype=torch.float64, generator=g) * scale
    return params


@pytest.mark.parametrize("scale", [10.0, 1e-3], ids=["above_max_norm", "below_max_norm"])
def test_matches_torch_clip_grad_norm(scale: float) -> None:
    ours, reference = _params_with_grads(scale), _params_with_grads(scale)
    norm_before = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in reference[:-1]]))
    assert (norm_before > 1.0) == (scale > 1)  # the two cases really are on both sides of max_norm

    total = clip_grad_norm(ours, max_norm=1.0)
    expected = torch.nn.utils.clip_grad_norm_(reference, max_norm=1.0)
    torch.testing.assert_close(total, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(total, norm_before, atol=1e-6, rtol=0)  # the norm before clipping
    for p, q in zip(ours, reference, strict=True):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-12, rtol=0)
    norm_after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours[:-1]]))
    assert norm_after <= 1.0
    if scale < 1:  # nothing to clip: the gradients are untouched
        assert all(
            torch.equal(p.grad, q.grad)
            for p, q in zip(ours, _params_with_grads(scale), strict=True)
            if p.grad is not None
        )


def test_a_single_tensor_and_no_gradients_at_all() -> None:
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert clip_grad_norm(p, max_norm=1.0).item() == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8], dtype=torch.float64), atol=1e-6, rtol=0)
    assert clip_grad_norm([nn.Parameter(torch.zeros(2))], max_norm=1.0).item() == 0.0


class _Regression(L.LightningModule):
    """Linear regression with large targets (so a max norm of 0.5 clips every step); ``lab_clip``
    routes Lightning's clipping through the lab's function, as LabModule would."""

    def __init__(self, lab_clip: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        self.lab_clip = lab_clip
        self.norms: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: Any = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        self.norms.append(
            float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()])))
        )
        if self.lab_clip:  # the hook body proposed for LabModule
            params = [p for group in optimizer.param_groups for p in group["params"]]
            clip_grad_norm(params, gradient_clip_val)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


def test_the_hook_body_clips_like_lightnings_gradient_clip_val() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    data = TensorDataset(x, 10 * x.sum(1, keepdim=True))
    weights, norms = [], []
    for lab_clip in (True, False):
        module = _Regression(lab_clip)
        trainer = L.Trainer(
            max_steps=8,
            gradient_clip_val=0.5,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, DataLoader(data, batch_size=8))
        weights.append(module.net.state_dict())
        norms.append(module.norms)
    assert len(norms[0]) == 8 and min(norms[0]) > 0.5  # clipping was active at every step
    for name, tensor in weights[1].items():
        torch.testing.assert_close(weights[0][name], tensor, atol=1e-6, rtol=0, msg=name)

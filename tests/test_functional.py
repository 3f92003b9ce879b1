"""Softmax, log-softmax, cross-entropy and SiLU written out agree with torch's, values and gradients,
on any dimension, and stay finite where the textbook formula overflows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llm_lab.nn.functional import cross_entropy, log_softmax, silu, softmax

TOL = {"atol": 1e-6, "rtol": 0.0}  # float64 throughout unless a test says otherwise


def _huge_logits() -> torch.Tensor:
    """Logits of ±1e4 (plus noise): ``exp`` of them is ``inf``, so only a shifted formula works."""
    g = torch.Generator().manual_seed(3)
    signs = torch.randint(0, 2, (6, 11), generator=g).double() * 2 - 1
    logits = signs * 1e4 + torch.randn(6, 11, generator=g, dtype=torch.float64)
    assert torch.isinf(torch.exp(logits)).any()  # the naive formula would divide inf by inf here
    return logits


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_softmax_and_log_softmax_match_torch_on_any_dimension(dim: int) -> None:
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 4
    torch.testing.assert_close(softmax(x, dim=dim), F.softmax(x, dim=dim), **TOL)
    torch.testing.assert_close(log_softmax(x, dim=dim), F.log_softmax(x, dim=dim), **TOL)


def test_softmax_is_unchanged_by_a_shift_in_float32() -> None:
    """CS336's stability check: the same probabilities for ``x`` and ``x + 100`` in float32."""
    x = torch.rand(5, 7, generator=torch.Generator().manual_seed(1))
    expected = F.softmax(x, dim=-1)
    torch.testing.assert_close(softmax(x, dim=-1), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(softmax(x + 100, dim=-1), expected, atol=1e-6, rtol=0)


def test_huge_logits_stay_finite_and_match_torch() -> None:
    logits = _huge_logits()
    targets = torch.randint(0, 11, (6,), generator=torch.Generator().manual_seed(4))
    for ours, reference in (
        (softmax(logits, -1), F.softmax(logits, -1)),
        (log_softmax(logits, -1), F.log_softmax(logits, -1)),
        (cross_entropy(logits, targets), F.cross_entropy(logits, targets)),
    ):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, reference, **TOL)


def test_cross_entropy_matches_torch_with_leading_dimensions_and_gradients() -> None:
    """(B, T, V) logits and (B, T) targets, as a language model has them; F.cross_entropy wants the
    classes on dimension 1, so it gets the flattened (B·T, V) view."""
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 5, 13, dtype=torch.float64, generator=g) * 3).requires_grad_()
    targets = torch.randint(0, 13, (2, 5), generator=g)
    reference_logits = logits.detach().clone().requires_grad_()
    ours = cross_entropy(logits, targets)
    reference = F.cross_entropy(reference_logits.reshape(-1, 13), targets.reshape(-1))
    torch.testing.assert_close(ours, reference, **TOL)
    ours.backward()
    reference.backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad, **TOL)


def test_cross_entropy_of_a_uniform_prediction_is_log_vocab() -> None:
    logits = torch.zeros(4, 50, dtype=torch.float64)
    targets = torch.tensor([0, 7, 49, 3])
    assert cross_entropy(logits, targets).item() == pytest.approx(torch.log(torch.tensor(50.0)).item())


def test_silu_matches_torch_with_gradients_and_saturates_cleanly() -> None:
    x = torch.cat([torch.randn(100, dtype=torch.float64) * 5, torch.tensor([-1e4, 1e4], dtype=torch.float64)])
    x.requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = silu(x), F.silu(x_ref)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, **TOL)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)

"""LayerNorm and RMSNorm written by hand agree with torch.nn's, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.normalization import LayerNorm, RMSNorm, make_norm

D = 48


def _random_affine(ours: nn.Module, reference: nn.Module) -> None:
    """Give both modules the same random (non-trivial) gain and bias."""
    with torch.no_grad():
        for name, param in reference.named_parameters():
            param.normal_()
            getattr(ours, name).copy_(param)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias: bool) -> None:
    torch.manual_seed(0)
    ours, reference = LayerNorm(D, bias=bias), nn.LayerNorm(D, eps=1e-5, bias=bias)
    _random_affine(ours, reference)
    x = (torch.randn(4, 7, D) * 3 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    # Same gradients for inputs and parameters under an arbitrary upstream gradient.
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(getattr(ours, name).grad, param.grad, atol=1e-4, rtol=1e-4)


def test_layernorm_state_dict_is_interchangeable_with_torch() -> None:
    reference = nn.LayerNorm(D)
    ours = LayerNorm(D)
    assert ours.load_state_dict(reference.state_dict()).missing_keys == []


def test_layernorm_output_has_zero_mean_unit_variance() -> None:
    x = torch.randn(3, 5, D) * 10 - 4
    y = LayerNorm(D)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)


def test_rmsnorm_matches_torch() -> None:
    torch.manual_seed(1)
    ours, reference = RMSNorm(D, eps=1e-6), nn.RMSNorm(D, eps=1e-6)
    _random_affine(ours, reference)
    x = torch.randn(2, 9, D, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)


def test_rmsnorm_in_bfloat16_stays_close_to_float32() -> None:
    x = torch.randn(4, D) * 50
    norm = RMSNorm(D)
    y16 = norm.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), nn.RMSNorm(D, eps=1e-6)(x), atol=2e-2, rtol=2e-2)


def test_unknown_norm_names_the_argument() -> None:
    with pytest.raises(ArgumentError, match="^norm: .*layernorm, rmsnorm"):
        make_norm("batchnorm", D)

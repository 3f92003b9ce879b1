"""LayerNorm and RMSNorm: the written-out functions against PyTorch's fused twins (values and
gradients), and the modules, whose ``fused`` switch changes the kernels, never the parameters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.normalization import LayerNorm, RMSNorm, layer_norm, make_norm, rms_norm

D = 48
# float32: one rounding per op; the written-out versions take five passes where the kernel takes one.
FORWARD_TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-4}


def assert_same_values_and_gradients(
    ours: Callable[..., torch.Tensor], reference: Callable[..., torch.Tensor], *inputs: torch.Tensor | None
) -> None:
    """ours(*inputs) == reference(*inputs), and so are the gradients of every tensor input under
    an arbitrary upstream gradient."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    ref_leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    y, y_ref = ours(*leaves), reference(*ref_leaves)
    torch.testing.assert_close(y, y_ref, **FORWARD_TOL)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    for leaf, ref_leaf in zip(leaves, ref_leaves, strict=True):
        if leaf is not None and ref_leaf is not None:
            torch.testing.assert_close(leaf.grad, ref_leaf.grad, **GRAD_TOL)


@pytest.mark.parametrize("bias", [True, False])
def test_written_out_layer_norm_equals_f_layer_norm(bias: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 7, D) * 3 + 1
    weight, shift = torch.randn(D), torch.randn(D) if bias else None
    assert_same_values_and_gradients(
        lambda x, w, b: layer_norm(x, w, b, 1e-5),
        lambda x, w, b: F.layer_norm(x, (D,), w, b, 1e-5),
        x,
        weight,
        shift,
    )


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_written_out_rms_norm_equals_f_rms_norm(eps: float) -> None:
    torch.manual_seed(1)
    x, weight = torch.randn(2, 9, D) * 0.1, torch.randn(D)  # small x: eps matters
    assert_same_values_and_gradients(
        lambda x, w: rms_norm(x, w, eps), lambda x, w: F.rms_norm(x, (D,), w, eps), x, weight
    )


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_fused_switch_changes_kernels_not_parameters(norm: str) -> None:
    torch.manual_seed(2)
    fused, written = make_norm(norm, D, eps=1e-3, fused=True), make_norm(norm, D, eps=1e-3, fused=False)
    with torch.no_grad():
        for param in fused.parameters():
            param.normal_()
    assert written.load_state_dict(fused.state_dict()).missing_keys == []
    x = torch.randn(3, 5, D)
    torch.testing.assert_close(written(x), fused(x), **FORWARD_TOL)


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (LayerNorm(D, eps=1e-5), nn.LayerNorm(D, eps=1e-5)),
        (LayerNorm(D, bias=False), nn.LayerNorm(D, bias=False)),
        (RMSNorm(D, eps=1e-6), nn.RMSNorm(D, eps=1e-6)),
    ],
)
def test_state_dicts_are_interchangeable_with_torch(ours: nn.Module, reference: nn.Module) -> None:
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_()
    assert ours.load_state_dict(reference.state_dict()).missing_keys == []
    x = torch.randn(2, 3, D)
    for fused in (True, False):
        ours.fused = fused
        torch.testing.assert_close(ours(x), reference(x), **FORWARD_TOL)


def test_layer_norm_output_has_zero_mean_unit_variance() -> None:
    x = torch.randn(3, 5, D) * 10 - 4
    y = layer_norm(x, torch.ones(D), None, 1e-5)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_rmsnorm_in_bfloat16_stays_close_to_float32(fused: bool) -> None:
    x = torch.randn(4, D) * 50
    norm = RMSNorm(D, fused=fused)
    y16 = norm.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), nn.RMSNorm(D, eps=1e-6)(x), atol=2e-2, rtol=2e-2)


def test_unknown_norm_names_the_argument() -> None:
    with pytest.raises(ArgumentError, match="^norm: .*layernorm, rmsnorm"):
        make_norm("batchnorm", D)

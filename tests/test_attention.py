"""Tests of llm_lab.nn.attention against hand computations, torch.autograd and torch.nn.

The hand computations below are plain Python loops over lists of floats, written from the
formulas (Raschka, ch. 3; Vaswani et al. 2017, eq. 1), independent of the module's tensor code.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.attention import (
    CausalSelfAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention,
    SimplifiedSelfAttention,
    attention_weights,
    scaled_dot_product,
)

BACKENDS = ["naive", "sdpa"]
TOL: dict[str, Any] = {"rtol": 1e-5, "atol": 1e-5}


# ---------------------------------------------------------------- hand computations (plain loops)
def matvec(w: list[list[float]], x: list[float], b: list[float] | None = None) -> list[float]:
    """y = W x + b for an nn.Linear weight W of shape (out, in)."""
    return [
        sum(wi * xi for wi, xi in zip(row, x, strict=True)) + (b[o] if b else 0.0) for o, row in enumerate(w)
    ]


def loop_attention(
    q: list[list[float]], k: list[list[float]], v: list[list[float]], causal: bool, scale: float
) -> list[list[float]]:
    """context_i = Σ_j softmax_j(scale · q_i·k_j) v_j, over j ≤ i when causal."""
    out = []
    for i, qi in enumerate(q):
        visible = range(i + 1) if causal else range(len(k))
        scores = [scale * sum(a * b for a, b in zip(qi, k[j], strict=True)) for j in visible]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        out.append([sum(exps[n] / total * v[j][c] for n, j in enumerate(visible)) for c in range(len(v[0]))])
    return out


def loop_multihead(
    x: list[list[float]],
    w_qkv: list[list[float]],
    w_out: list[list[float]],
    b_out: list[float],
    num_heads: int,
    causal: bool,
) -> list[list[float]]:
    """Vaswani §3.2.2: per-head attention on row slices of [W_q; W_k; W_v], concat, then W^O."""
    d_out = len(w_out)
    hd = d_out // num_heads
    heads = []
    for h in range(num_heads):
        rows = [w_qkv[part * d_out + h * hd : part * d_out + (h + 1) * hd] for part in range(3)]
        q, k, v = ([matvec(w, xi) for xi in x] for w in rows)
        heads.append(loop_attention(q, k, v, causal, 1 / math.sqrt(hd)))
    concat = [sum((heads[h][t] for h in range(num_heads)), []) for t in range(len(x))]
    return [matvec(w_out, c, b_out) for c in concat]


def as_tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


@pytest.fixture
def x43() -> torch.Tensor:
    """One sequence of 4 tokens with 3 features."""
    return torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(0))


def test_simplified_matches_loops(x43: torch.Tensor) -> None:
    x = x43[0].tolist()
    expected = loop_attention(x, x, x, causal=False, scale=1.0)  # Raschka 3.3: unscaled scores
    torch.testing.assert_close(SimplifiedSelfAttention()(x43)[0], as_tensor(expected), **TOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_single_head_matches_loops(x43: torch.Tensor, causal: bool, backend: str) -> None:
    torch.manual_seed(1)
    if causal:
        module: SelfAttention = CausalSelfAttention(3, 2, context_length=4, backend=backend)
    else:
        module = SelfAttention(3, 2, qkv_bias=True, backend=backend)
    x = x43[0].tolist()
    q, k, v = (
        [matvec(lin.weight.tolist(), xi, lin.bias.tolist() if lin.bias is not None else None) for xi in x]
        for lin in (module.W_query, module.W_key, module.W_value)
    )
    expected = loop_attention(q, k, v, causal, 1 / math.sqrt(2))
    torch.testing.assert_close(module.eval()(x43)[0], as_tensor(expected), **TOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_multihead_matches_loops(causal: bool, backend: str) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 3, 4)
    fused = MultiHeadAttention(4, 4, context_length=3, num_heads=2, causal=causal, backend=backend).eval()
    expected = loop_multihead(
        x[0].tolist(),
        fused.qkv.weight.tolist(),
        fused.out_proj.weight.tolist(),
        fused.out_proj.bias.tolist(),
        num_heads=2,
        causal=causal,
    )
    torch.testing.assert_close(fused(x)[0], as_tensor(expected), **TOL)


# ---------------------------------------------------------------- equivalences between variants
def copy_into_wrapper(fused: MultiHeadAttention, wrapper: MultiHeadAttentionWrapper) -> None:
    """Give each single head its row slice of the fused [q | k | v] projection."""
    d_out, hd = fused.d_out, fused.head_dim
    with torch.no_grad():
        for h, head in enumerate(wrapper.heads):
            assert isinstance(head, SelfAttention)
            for part, lin in enumerate((head.W_query, head.W_key, head.W_value)):
                rows = slice(part * d_out + h * hd, part * d_out + (h + 1) * hd)
                lin.weight.copy_(fused.qkv.weight[rows])
                if lin.bias is not None and fused.qkv.bias is not None:
                    lin.bias.copy_(fused.qkv.bias[rows])
        wrapper.out_proj.load_state_dict(fused.out_proj.state_dict())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_equals_wrapper(causal: bool, backend: str) -> None:
    torch.manual_seed(3)
    fused = MultiHeadAttention(8, 12, 6, num_heads=3, qkv_bias=True, causal=causal, backend=backend).eval()
    wrapper = MultiHeadAttentionWrapper(
        8, 12, 6, num_heads=3, qkv_bias=True, causal=causal, backend=backend
    ).eval()
    copy_into_wrapper(fused, wrapper)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(wrapper(x), fused(x), **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_naive_equals_sdpa_in_eval(causal: bool) -> None:
    torch.manual_seed(4)
    module = MultiHeadAttention(16, 16, 10, num_heads=4, dropout=0.5, causal=causal).eval()
    x = torch.randn(3, 10, 16)
    sdpa_out = module(x)
    module.backend = "naive"
    torch.testing.assert_close(module(x), sdpa_out, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_random_but_unbiased(backend: str) -> None:
    """With dropout on, naive and sdpa draw different masks, so single outputs differ between
    backends and between calls; both rescale survivors by 1/(1-p), so the mean over many draws
    approaches the eval-mode output (standard error here ≈ 0.01, tolerance 0.05)."""
    torch.manual_seed(5)
    module = CausalSelfAttention(4, 4, context_length=5, dropout=0.3, backend=backend)
    x = torch.randn(1, 5, 4)
    expected = module.eval()(x)[0]
    module.train()
    with torch.no_grad():
        first, second = module(x), module(x)
        mean = module(x.expand(4000, 5, 4)).mean(dim=0)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(mean, expected, rtol=0, atol=0.05)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torch_multihead_attention(causal: bool, backend: str) -> None:
    torch.manual_seed(6)
    ours = MultiHeadAttention(16, 16, 7, num_heads=4, qkv_bias=True, causal=causal, backend=backend).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
    x = torch.randn(2, 7, 16)
    # nn.MultiheadAttention's boolean mask is True where attending is *forbidden*.
    forbidden = torch.ones(7, 7, dtype=torch.bool).triu(1) if causal else None
    expected, _ = ref(x, x, x, attn_mask=forbidden, need_weights=False)
    torch.testing.assert_close(ours(x), expected, **TOL)


# ---------------------------------------------------------------- the written-out formula
@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_equals_the_fused_kernel_values_and_gradients(causal: bool) -> None:
    """The lesson's softmax(q kᵀ/√d) v against F.scaled_dot_product_attention: float32, forward
    and the gradients of q, k, v within 1e-5."""
    torch.manual_seed(10)
    q, k, v = (torch.randn(2, 3, 7, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(7, 7, dtype=torch.bool).tril() if causal else None
    ours, _ = scaled_dot_product(q, k, v, mask)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ours, fused, **TOL)
    upstream = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * upstream).sum(), (q, k, v))
    fused_grads = torch.autograd.grad((fused * upstream).sum(), (q, k, v))
    for got, want in zip(grads, fused_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL)


# ---------------------------------------------------------------- causality via autograd
@pytest.mark.parametrize("kind", ["single", "wrapper", "fused"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gradient_from_the_future(kind: str, backend: str) -> None:
    """∂ output[t] / ∂ input[s] is exactly zero for every s > t, with dropout active."""
    torch.manual_seed(8)
    T, d = 6, 8
    if kind == "single":
        module: nn.Module = CausalSelfAttention(d, d, T, dropout=0.2, backend=backend)
    elif kind == "wrapper":
        module = MultiHeadAttentionWrapper(d, d, T, num_heads=2, dropout=0.2, backend=backend)
    else:
        module = MultiHeadAttention(d, d, T, num_heads=2, dropout=0.2, backend=backend)
    module.train()
    jac = torch.autograd.functional.jacobian(module, torch.randn(1, T, d))[0, :, :, 0]  # (T, d, T, d)
    for t in range(T):
        assert torch.all(jac[t, :, t + 1 :] == 0), f"output {t} depends on a later input"
    # ...while earlier inputs do matter (dropout may cut a single weight, never all of them).
    assert sum(jac[t, :, :t].abs().sum() for t in range(T)) > 0


# ---------------------------------------------------------------- attention weights for heatmaps
@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_weights_are_causal_distributions(backend: str) -> None:
    module = MultiHeadAttention(8, 8, 5, num_heads=2, backend=backend).eval()
    x = torch.randn(3, 5, 8)
    expected = module(x)
    with attention_weights(module) as maps:
        torch.testing.assert_close(module(x), expected, **TOL)
    weights = maps["attn"]
    assert weights.shape == (3, 2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5), **TOL)
    assert torch.all(weights.triu(1) == 0)
    # Outside the block the layer forgets them and goes back to its own backend.
    assert not module.keep_weights and module.weights is None


def test_every_head_of_the_wrapper_keeps_its_weights() -> None:
    wrapper = MultiHeadAttentionWrapper(8, 8, 5, num_heads=2).eval()
    with attention_weights(wrapper) as maps:
        wrapper(torch.randn(1, 5, 8))
    assert sorted(maps) == ["heads.0", "heads.1"] and maps["heads.0"].shape == (1, 5, 5)


# ---------------------------------------------------------------- bad input
def test_heads_must_divide_width() -> None:
    for build in (MultiHeadAttention, MultiHeadAttentionWrapper):
        with pytest.raises(ArgumentError, match="not divisible") as err:
            build(8, 10, 4, num_heads=3)
        assert err.value.arg == "num_heads"


def test_sequence_longer_than_context() -> None:
    module = MultiHeadAttention(4, 4, context_length=5, num_heads=2)
    with pytest.raises(ArgumentError, match="longer than context_length=5") as err:
        module(torch.randn(1, 6, 4))
    assert err.value.arg == "context_length"
    with pytest.raises(ArgumentError) as err:
        CausalSelfAttention(4, 4, context_length=3)(torch.randn(1, 4, 4))
    assert err.value.arg == "context_length"


def test_unknown_backend_lists_valid_ones() -> None:
    for build in (MultiHeadAttention, MultiHeadAttentionWrapper):
        with pytest.raises(ArgumentError, match="naive, sdpa") as err:
            build(4, 4, 4, num_heads=2, backend="flash")
        assert err.value.arg == "backend"


def test_bad_dropout() -> None:
    with pytest.raises(ArgumentError) as err:
        CausalSelfAttention(4, 4, context_length=4, dropout=1.0)
    assert err.value.arg == "dropout"


def test_softmax_reference_sanity() -> None:
    """The loop helper itself agrees with F.scaled_dot_product_attention (guards the guard)."""
    torch.manual_seed(9)
    q, k, v = torch.randn(3, 4, 2).unbind(0)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = loop_attention(q.tolist(), k.tolist(), v.tolist(), causal=True, scale=1 / math.sqrt(2))
    torch.testing.assert_close(as_tensor(got), expected, **TOL)

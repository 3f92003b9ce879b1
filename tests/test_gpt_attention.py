"""The GPT's attention (llm_lab.models.gpt.Attention): against torch.nn.MultiheadAttention, grouped
queries against duplicated key/value heads, the KV cache against the full forward, causality by
autograd, and the weights a heatmap reads."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from llm_lab.models.gpt import GPT, Attention, GPTConfig
from llm_lab.nn.attention import KVCache, attention_weights
from llm_lab.nn.positions import RotaryEmbedding

KERNELS = ["fused", "written_out"]
TOL: dict[str, Any] = {"rtol": 1e-5, "atol": 1e-5}  # float32


def attention(**changes: Any) -> Attention:
    torch.manual_seed(0)
    settings = {"context_length": 12, "n_head": 4, "n_embd": 16, "qkv_bias": True, **changes}
    module = Attention(GPTConfig(**settings))
    with torch.no_grad():  # random biases, so that they are tested too
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.1)
    return module.eval()


@pytest.mark.parametrize("kernels", KERNELS)
def test_equals_torch_multihead_attention(kernels: str) -> None:
    ours = attention(kernels=kernels)
    reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():  # the same [q | k | v] row layout as in_proj_weight
        reference.in_proj_weight.copy_(ours.qkv.weight)
        reference.in_proj_bias.copy_(ours.qkv.bias)
        reference.out_proj.load_state_dict(ours.out_proj.state_dict())
    x = torch.randn(2, 9, 16)
    forbidden = torch.ones(9, 9, dtype=torch.bool).triu(1)  # True where attending is *forbidden*
    expected, _ = reference(x, x, x, attn_mask=forbidden, need_weights=False)
    torch.testing.assert_close(ours(x), expected, **TOL)


@pytest.mark.parametrize("kernels", KERNELS)
def test_grouped_queries_equal_duplicated_key_value_heads(kernels: str) -> None:
    """GQA (Ainslie et al. 2023): n_kv_head=2 key/value heads serving 4 query heads in groups of 2
    computes what 4 ordinary heads compute when heads 2g and 2g+1 carry copies of kv head g."""
    grouped = attention(n_kv_head=2, kernels=kernels)
    full = attention(n_kv_head=4, kernels=kernels)
    hd = 4
    q_rows, k_rows, v_rows = grouped.qkv.weight.split([16, 8, 8])
    q_bias, k_bias, v_bias = grouped.qkv.bias.split([16, 8, 8])

    def duplicated(rows: torch.Tensor) -> torch.Tensor:
        return rows.unflatten(0, (2, hd)).repeat_interleave(2, dim=0).flatten(0, 1)

    with torch.no_grad():
        full.qkv.weight.copy_(torch.cat([q_rows, duplicated(k_rows), duplicated(v_rows)]))
        full.qkv.bias.copy_(torch.cat([q_bias, duplicated(k_bias), duplicated(v_bias)]))
        full.out_proj.load_state_dict(grouped.out_proj.state_dict())
    assert grouped.qkv.weight.shape == (16 + 2 * 8, 16)  # fewer key/value rows: fewer parameters
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(grouped(x), full(x), **TOL)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n_kv_head", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("use_rope", [False, True], ids=["no-rope", "rope"])
def test_kv_cache_equals_full_forward(kernels: str, n_kv_head: int, use_rope: bool) -> None:
    module = attention(kernels=kernels, n_kv_head=n_kv_head)
    rope = RotaryEmbedding(4, 12) if use_rope else None
    x = torch.randn(2, 12, 16)
    full = module(x, rope=rope)
    cache = KVCache()
    # A 5-token prompt, then single tokens, then a chunk of 3.
    pieces = [module(x[:, :5], rope=rope, kv_cache=cache)]
    pieces += [module(x[:, t : t + 1], rope=rope, kv_cache=cache) for t in range(5, 9)]
    pieces.append(module(x[:, 9:], rope=rope, kv_cache=cache))
    assert cache.length == 12
    assert cache.k is not None and cache.k.shape == (2, n_kv_head, 12, 4)  # kv heads, not query heads
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("case", ["plain", "gqa+rope", "gqa+cache"])
def test_no_gradient_from_the_future(kernels: str, case: str) -> None:
    """∂ output[t] / ∂ input[s] is exactly zero for every s > t, with dropout active."""
    module = attention(kernels=kernels, dropout=0.2, n_kv_head=4 if case == "plain" else 2).train()
    rope = RotaryEmbedding(4, 12) if case == "gqa+rope" else None

    def forward(x: torch.Tensor) -> torch.Tensor:
        if case != "gqa+cache":
            return module(x, rope=rope)
        cache = KVCache()  # prefill 2 tokens, then chunks of 2
        return torch.cat([module(x[:, t : t + 2], kv_cache=cache) for t in range(0, 6, 2)], dim=1)

    jac = torch.autograd.functional.jacobian(forward, torch.randn(1, 6, 16))[0, :, :, 0]  # (T, d, T, d)
    for t in range(6):
        assert torch.all(jac[t, :, t + 1 :] == 0), f"output {t} depends on a later input"
    assert sum(jac[t, :, :t].abs().sum() for t in range(6)) > 0


def test_written_out_attention_equals_fused_values_and_gradients() -> None:
    """The two kernels of the same module: forward and every parameter's gradient within 1e-5."""
    fused, written = attention(kernels="fused", n_kv_head=2), attention(kernels="written_out", n_kv_head=2)
    written.load_state_dict(fused.state_dict())
    x = torch.randn(2, 11, 16)
    rope = RotaryEmbedding(4, 12)
    y_fused, y_written = fused(x, rope=rope), written(x, rope=rope)
    torch.testing.assert_close(y_written, y_fused, **TOL)
    upstream = torch.randn_like(y_fused)
    (y_fused * upstream).sum().backward()
    (y_written * upstream).sum().backward()
    for (name, p_fused), p_written in zip(fused.named_parameters(), written.parameters(), strict=True):
        torch.testing.assert_close(p_written.grad, p_fused.grad, **TOL, msg=name)


@pytest.mark.parametrize("kernels", KERNELS)
def test_a_gpt_keeps_each_layers_weights_for_heatmaps(kernels: str) -> None:
    torch.manual_seed(1)
    model = GPT(
        GPTConfig(
            vocab_size=30, context_length=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, kernels=kernels
        )
    ).eval()
    ids = torch.randint(0, 30, (2, 7))
    expected = model(ids)
    with attention_weights(model) as maps:
        torch.testing.assert_close(model(ids), expected, **TOL)  # the same output, kept or not
    assert sorted(maps) == ["blocks.0.attn", "blocks.1.attn"]
    for weights in maps.values():
        assert weights.shape == (2, 4, 7, 7)  # every query head, even with 2 key/value heads
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7), **TOL)
        assert torch.all(weights.triu(1) == 0)
    assert all(not block.attn.keep_weights and block.attn.weights is None for block in model.blocks)

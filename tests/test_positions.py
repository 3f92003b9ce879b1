"""Tests of llm_lab.nn.positions: the §3.5 formula, RoPE's properties and HF's LLaMA rotary."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_lab.errors import ArgumentError
from llm_lab.nn.positions import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
)


@pytest.mark.parametrize("d_model", [6, 7])
def test_sinusoidal_equals_vaswani_formula(d_model: int) -> None:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    pe = SinusoidalPositionalEmbedding(context_length=50, d_model=d_model)
    expected = [
        [
            math.sin(pos / 10000 ** (dim / d_model))
            if dim % 2 == 0
            else math.cos(pos / 10000 ** ((dim - 1) / d_model))
            for dim in range(d_model)
        ]
        for pos in range(50)
    ]
    torch.testing.assert_close(pe(50), torch.tensor(expected), rtol=0, atol=1e-6)
    torch.testing.assert_close(pe(4, offset=20), pe(50)[20:24], rtol=0, atol=0)
    assert not list(pe.parameters())


def test_learned_is_a_trainable_row_per_position() -> None:
    pe = LearnedPositionalEmbedding(context_length=10, d_model=4)
    out = pe(3, offset=5)
    torch.testing.assert_close(out, pe.weight[5:8], rtol=0, atol=0)
    out.sum().backward()
    assert pe.weight.grad is not None
    touched = pe.weight.grad.abs().sum(-1) > 0
    assert touched.tolist() == [i in (5, 6, 7) for i in range(10)]


@pytest.mark.parametrize("build", [LearnedPositionalEmbedding, SinusoidalPositionalEmbedding])
def test_absolute_positions_beyond_context_are_refused(build: type) -> None:
    pe = build(context_length=8, d_model=4)
    with pytest.raises(ArgumentError) as err:
        pe(5, offset=4)
    assert err.value.arg == "context_length"


def test_rope_equals_the_paper_rotation() -> None:
    """Su et al. 2021, eq. 34: features (2i, 2i+1) at position m turn by m·base^(-2i/d)."""
    head_dim, base = 6, 100.0
    rope = RotaryEmbedding(head_dim, context_length=5, base=base)
    x = torch.randn(5, head_dim, generator=torch.Generator().manual_seed(0))
    expected = []
    for m, row in enumerate(x.tolist()):
        out = []
        for i in range(head_dim // 2):
            angle = m * base ** (-2 * i / head_dim)
            a, b = row[2 * i], row[2 * i + 1]
            out += [a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle)]
        expected.append(out)
    torch.testing.assert_close(rope.rotate(x), torch.tensor(expected), rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), offset=st.integers(0, 24), base=st.sampled_from([1e2, 1e4]))
def test_rope_preserves_norms_and_sees_only_offsets(seed: int, offset: int, base: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    rope = RotaryEmbedding(head_dim=8, context_length=32, base=base)
    q, k = torch.randn(2, 1, 1, 8, generator=gen, dtype=torch.float64).unbind(0)
    q_seq, k_seq = q.expand(1, 1, 8, 8).float(), k.expand(1, 1, 8, 8).float()
    q_rot, k_rot = rope(q_seq, k_seq, offset=offset)
    # Rotations keep lengths.
    torch.testing.assert_close(q_rot.norm(dim=-1), q_seq.norm(dim=-1), rtol=1e-5, atol=1e-5)
    # The same q and k placed at positions m, n score q_m·k_n that depends only on n - m,
    # whatever the absolute offset: the score matrix is constant along each diagonal.
    scores = (q_rot @ k_rot.transpose(-2, -1))[0, 0]
    torch.testing.assert_close(scores[1:, 1:], scores[:-1, :-1], rtol=1e-4, atol=1e-4)
    q_zero, k_zero = rope(q_seq, k_seq)
    unshifted = (q_zero @ k_zero.transpose(-2, -1))[0, 0]
    torch.testing.assert_close(scores, unshifted, rtol=1e-4, atol=1e-4)


def test_rope_matches_hf_llama_up_to_pair_order() -> None:
    """HF's LLaMA rotates feature i with i + d/2; reorder our interleaved pairs to compare."""
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    head_dim, length, base = 8, 12, 500.0
    config = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, max_position_embeddings=length)
    config.rope_parameters = {"rope_type": "default", "rope_theta": base}
    hf_rope = llama.LlamaRotaryEmbedding(config)
    q, k = torch.randn(2, 1, 2, length, head_dim, generator=torch.Generator().manual_seed(1))
    cos, sin = hf_rope(q, torch.arange(length)[None])

    def halves(x: torch.Tensor) -> torch.Tensor:  # interleaved pairs → HF's split halves
        return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)

    expected = llama.apply_rotary_pos_emb(halves(q), halves(k), cos, sin)
    ours = RotaryEmbedding(head_dim, context_length=length, base=base)(q, k)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(halves(got), want, rtol=1e-5, atol=1e-5)


def test_rope_offset_continues_the_sequence() -> None:
    rope = RotaryEmbedding(4, context_length=10)
    x = torch.randn(1, 2, 10, 4)
    torch.testing.assert_close(rope.rotate(x[..., 6:9, :], offset=6), rope.rotate(x)[..., 6:9, :])


def test_rope_errors_name_their_argument() -> None:
    with pytest.raises(ArgumentError) as err:
        RotaryEmbedding(5, context_length=8)
    assert err.value.arg == "head_dim"
    with pytest.raises(ArgumentError) as err:
        RotaryEmbedding(4, context_length=8).rotate(torch.randn(3, 4), offset=6)
    assert err.value.arg == "context_length"

"""The feed-forward blocks: written-out activations against PyTorch's fused twins (values and
gradients), and the MLPs against Hugging Face's GPT-2 and LLaMA MLPs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, LlamaConfig
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
from transformers.models.llama.modeling_llama import LlamaMLP

from llm_lab.errors import ArgumentError
from llm_lab.nn.feedforward import FeedForward, SwiGLU, gelu_tanh, make_mlp, silu, swiglu_hidden

TOL = {"atol": 1e-6, "rtol": 1e-5}  # float32, a few roundings apart


@pytest.mark.parametrize(
    ("ours", "fused"),
    [(gelu_tanh, lambda x: F.gelu(x, approximate="tanh")), (silu, F.silu)],
    ids=["gelu_tanh", "silu"],
)
def test_written_out_activation_equals_its_fused_twin(
    ours: Callable[[torch.Tensor], torch.Tensor], fused: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    x = torch.linspace(-8, 8, 1001, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    torch.testing.assert_close(ours(x), fused(x_ref), **TOL)
    ours(x).sum().backward()
    fused(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_feedforward_matches_hf_gpt2_mlp(fused: bool) -> None:
    torch.manual_seed(0)
    ours = FeedForward(32, fused=fused)
    reference = GPT2MLP(4 * 32, GPT2Config(n_embd=32, activation_function="gelu_new")).eval()
    with torch.no_grad():  # HF's Conv1D stores (in, out): the transpose of nn.Linear
        ours.fc.weight.copy_(reference.c_fc.weight.t())
        ours.fc.bias.copy_(reference.c_fc.bias)
        ours.proj.weight.copy_(reference.c_proj.weight.t())
        ours.proj.bias.copy_(reference.c_proj.bias)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_swiglu_matches_hf_llama_mlp(fused: bool) -> None:
    torch.manual_seed(0)
    ours = SwiGLU(32, fused=fused)
    hidden = ours.gate.out_features
    assert hidden == swiglu_hidden(32) and hidden % 8 == 0 and abs(3 * hidden - 8 * 32) <= 3 * 8
    reference = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=hidden, hidden_act="silu"))
    with torch.no_grad():
        ours.gate.weight.copy_(reference.gate_proj.weight)
        ours.up.weight.copy_(reference.up_proj.weight)
        ours.proj.weight.copy_(reference.down_proj.weight)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_swiglu_keeps_the_parameter_count_of_the_4x_mlp() -> None:
    """Shazeer 2020, §2: three d×h matrices with h ≈ 8d/3 hold about as many weights as two d×4d."""
    for d in (64, 384, 768, 4096):
        ratio = 3 * d * swiglu_hidden(d) / (2 * d * 4 * d)
        assert 1.0 <= ratio < 1.0 + 24 / (8 * d)


def test_make_mlp_takes_the_hidden_size_and_biases() -> None:
    gelu = make_mlp("gelu", 16, hidden=24, bias=False)
    assert isinstance(gelu, FeedForward) and gelu.fc.out_features == 24 and gelu.fc.bias is None
    swiglu = make_mlp("swiglu", 16, bias=True)
    assert isinstance(swiglu, SwiGLU) and swiglu.up.out_features == swiglu_hidden(16)
    assert swiglu.up.bias is not None
    with pytest.raises(ArgumentError, match="^mlp: .*gelu, swiglu"):
        make_mlp("relu", 16)

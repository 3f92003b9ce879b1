"""The GPT model: its building blocks against references, its sizes, init, errors and causality."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from hydra import compose, initialize_config_dir
from transformers import GPT2Config, LlamaConfig
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
from transformers.models.llama.modeling_llama import LlamaMLP

from llm_lab.config import build
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.models import GPT
from llm_lab.models.gpt import NAMED_SIZES, Block, GPTConfig
from llm_lab.nn.feedforward import FeedForward, SwiGLU, gelu_tanh

TINY: dict[str, Any] = {"vocab_size": 50, "context_length": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
MODERN = {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rope", "qkv_bias": False}


def tiny(**changes: object) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **changes})).eval()  # type: ignore[arg-type]


# --- feed-forward blocks -------------------------------------------------------------------------


def test_gelu_tanh_matches_torch() -> None:
    x = torch.linspace(-8, 8, 1001)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6)


def test_feedforward_matches_hf_gpt2_mlp() -> None:
    torch.manual_seed(0)
    ours = FeedForward(32)
    reference = GPT2MLP(4 * 32, GPT2Config(n_embd=32, activation_function="gelu_new")).eval()
    with torch.no_grad():  # HF's Conv1D stores (in, out): the transpose of nn.Linear
        ours.fc.weight.copy_(reference.c_fc.weight.t())
        ours.fc.bias.copy_(reference.c_fc.bias)
        ours.proj.weight.copy_(reference.c_proj.weight.t())
        ours.proj.bias.copy_(reference.c_proj.bias)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_swiglu_matches_hf_llama_mlp() -> None:
    torch.manual_seed(0)
    ours = SwiGLU(32)
    hidden = ours.gate.out_features
    assert hidden % 8 == 0 and abs(3 * hidden - 8 * 32) <= 3 * 8  # ≈ ⅔·4d, parameter-matched
    reference = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=hidden, hidden_act="silu"))
    with torch.no_grad():
        ours.gate.weight.copy_(reference.gate_proj.weight)
        ours.up.weight.copy_(reference.up_proj.weight)
        ours.proj.weight.copy_(reference.down_proj.weight)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


# --- sizes and initialisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "millions"), [("gpt2", 124), ("gpt2-medium", 355), ("gpt2-large", 774), ("gpt2-xl", 1558)]
)
def test_named_sizes_have_gpt2_parameter_counts(size: str, millions: int) -> None:
    """Radford et al. 2019 (Table 2, as corrected in the released models): 124M…1558M with the
    tied head counted once. Built on the meta device: shapes only, no memory, no time."""
    with torch.device("meta"):
        model = GPT.from_size(size, vocab_size=50257)
    assert round(model.num_params(non_embedding=False) / 1e6) == millions


def test_weights_are_tied_and_initialised_like_gpt2() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, context_length=64, n_layer=8, n_head=4, n_embd=256))
    assert model.lm_head.weight is model.tok_emb.weight
    std_residual = 0.02 / math.sqrt(2 * 8)
    # Sample standard deviations of 65k normal draws are within ~1% of the true one.
    first = model.blocks[0]
    assert isinstance(first, Block) and isinstance(first.mlp, FeedForward)
    assert first.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert first.mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.03)
    for block in model.blocks:
        assert isinstance(block, Block) and isinstance(block.mlp, FeedForward)
        assert block.attn.out_proj.weight.std().item() == pytest.approx(std_residual, rel=0.03)
        assert block.mlp.proj.weight.std().item() == pytest.approx(std_residual, rel=0.03)
        assert torch.all(block.attn.qkv.bias == 0)


def test_param_groups_decay_only_matrices() -> None:
    model = tiny()
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    # Every parameter lands in exactly one group.
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)
    for p in no_decay["params"]:
        assert p.dim() == 1 or names[id(p)] in ("tok_emb.weight", "pos_emb.weight")
    assert all(p.dim() == 2 and "emb" not in names[id(p)] for p in decay["params"])
    assert id(model.get_parameter("blocks.0.attn.qkv.weight")) in decayed
    # The AdamW of torch accepts the groups as they are.
    torch.optim.AdamW(model.param_groups(0.1), lr=1e-3)


# --- forward properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, MODERN], ids=["gpt2", "modern"])
def test_future_tokens_do_not_change_past_logits(variant: dict[str, object]) -> None:
    model = tiny(**variant)
    x = torch.randint(0, 50, (2, 12))
    x_changed = x.clone()
    x_changed[:, 8:] = (x[:, 8:] + 1) % 50
    with torch.no_grad():
        a, b = model(x), model(x_changed)
    assert a.shape == (2, 12, 50)
    assert (model.pos_emb is None) == (variant.get("positions") == "rope")
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("variant", [{}, MODERN], ids=["gpt2", "modern"])
def test_naive_and_sdpa_backends_agree(variant: dict[str, object]) -> None:
    sdpa = tiny(backend="sdpa", **variant)
    naive = tiny(backend="naive", **variant)
    naive.load_state_dict(sdpa.state_dict())
    x = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(naive(x), sdpa(x), atol=1e-5, rtol=1e-5)


def test_a_tiny_gpt_memorises_a_batch() -> None:
    model = tiny(dropout=0.1).train()
    opt = torch.optim.AdamW(model.param_groups(0.0), lr=3e-3)
    x = torch.randint(0, 50, (4, 16))
    y = torch.roll(x, -1, dims=1)
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(50), rel=0.1)  # N(0, 0.02) init ≈ uniform
    assert losses[-1] < 0.3 * losses[0]


# --- errors -----------------------------------------------------------------------------------------


def test_bad_config_fails_early_naming_the_setting() -> None:
    with pytest.raises(ArgumentError, match=r"^n_head: n_embd=30.*n_head=4"):
        GPTConfig(**{**TINY, "n_embd": 30, "n_head": 4})
    with pytest.raises(ArgumentError, match="^size: .*" + ", ".join(NAMED_SIZES)):
        GPT.from_size("gpt5")
    with pytest.raises(ArgumentError, match="^norm: "):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ArgumentError, match="^n_layr: is not a GPT setting"):
        GPTConfig.from_name("lab-tiny", n_layr=3)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.net.n_head=3", "model.net.n_head"),
        ("model.net.norm=batchnorm", "model.net.norm"),
        ("model.net.size=gpt5", "model.net.size"),
    ],
)
def test_config_build_names_the_full_key(override: str, key: str) -> None:
    """The library names its argument; ``config.build`` turns it into the key a user sets."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gpt", override])
    with pytest.raises(ConfigError) as err:
        build(cfg.model, cfg, vocab_size=100)
    assert err.value.key == key


def test_too_long_input_and_too_large_vocabulary_are_refused() -> None:
    model = tiny()
    with pytest.raises(ArgumentError, match="^context_length: 17 tokens.*16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    model.check_vocab(50)
    with pytest.raises(ArgumentError, match="^vocab_size: .*51 tokens"):
        model.check_vocab(51)


def test_from_size_keeps_size_values_for_null_overrides() -> None:
    model = GPT.from_size("lab-tiny", vocab_size=77, n_layer=None, dropout=0.2)
    assert model.config.n_layer == NAMED_SIZES["lab-tiny"]["n_layer"]
    assert (model.config.vocab_size, model.config.dropout) == (77, 0.2)


def test_flops_per_token_follows_palm_formula() -> None:
    """PaLM appendix B: 6N + 12·L·H·Q·T, with N the non-embedding parameter count."""
    model = tiny()
    cfg = model.config
    n = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()  # type: ignore
    expected = 6 * n + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * 16
    assert model.flops_per_token(16) == expected

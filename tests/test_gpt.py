"""The GPT model: sizes, init, the kernels switch, the decoder settings (GQA, untied head, biases,
d_ff), the KV cache on every combination, FLOPs against PyTorch's counter, errors and causality."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from llm_lab.config import build
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.models import GPT
from llm_lab.models.gpt import NAMED_SIZES, Block, GPTConfig
from llm_lab.nn.attention import KVCache
from llm_lab.nn.feedforward import FeedForward, SwiGLU, swiglu_hidden

TINY: dict[str, Any] = {"vocab_size": 50, "context_length": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
MODERN = {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rope", "qkv_bias": False}
LLAMA = {**MODERN, "attn_out_bias": False, "mlp_bias": False, "tie_embeddings": False, "n_kv_head": 1}
VARIANTS = pytest.mark.parametrize("variant", [{}, MODERN, LLAMA], ids=["gpt2", "modern", "llama"])


def tiny(**changes: object) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **changes})).eval()  # type: ignore[arg-type]


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


@VARIANTS
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


@VARIANTS
def test_written_out_kernels_equal_fused_values_and_gradients(variant: dict[str, object]) -> None:
    """One switch, the same parameters: the lab's formulas and PyTorch's fused kernels give the
    same logits and the same gradient for every parameter (float32, within 1e-5 / 1e-4)."""
    fused = tiny(kernels="fused", **variant).train()
    written = tiny(kernels="written_out", **variant).train()
    assert list(fused.state_dict()) == list(written.state_dict())
    written.load_state_dict(fused.state_dict())
    x = torch.randint(0, 50, (3, 16))
    logits = {}
    for name, model in (("fused", fused), ("written", written)):
        logits[name] = model(x)
        F.cross_entropy(logits[name].flatten(0, 1), torch.roll(x, -1, 1).flatten()).backward()
    torch.testing.assert_close(logits["written"], logits["fused"], atol=1e-5, rtol=1e-5)
    for (name, p_fused), p_written in zip(fused.named_parameters(), written.parameters(), strict=True):
        torch.testing.assert_close(p_written.grad, p_fused.grad, atol=1e-4, rtol=1e-4, msg=name)


# --- the settings of modern decoders ---------------------------------------------------------------


def test_settings_shape_the_layers() -> None:
    model = tiny(**LLAMA, n_head=4, d_ff=40)
    block = model.blocks[0]
    assert isinstance(block, Block) and isinstance(block.mlp, SwiGLU)
    # GQA: 4 query heads of width 8, one shared key/value head: 32 + 2·8 projection rows.
    assert block.attn.qkv.weight.shape == (32 + 2 * 8, 32)
    assert block.mlp.up.weight.shape == (40, 32)
    assert block.attn.qkv.bias is None and block.attn.out_proj.bias is None and block.mlp.up.bias is None
    assert model.lm_head.weight is not model.tok_emb.weight and model.pos_emb is None
    assert model.rope is not None and model.rope.sin.shape == (16, 8)  # context_length × head_dim


def test_d_ff_defaults() -> None:
    """null: 4·n_embd for GPT-2's MLP, the parameter-matched ≈ 8/3·n_embd for SwiGLU."""
    gelu, swiglu = tiny().blocks[0], tiny(mlp="swiglu").blocks[0]
    assert isinstance(gelu, Block) and isinstance(gelu.mlp, FeedForward) and gelu.mlp.fc.out_features == 128
    assert isinstance(swiglu, Block) and isinstance(swiglu.mlp, SwiGLU)
    assert swiglu.mlp.up.out_features == swiglu_hidden(32) == 88


def test_rope_theta_and_norm_eps_reach_the_layers() -> None:
    model = tiny(positions="rope", rope_theta=500.0, norm="rmsnorm", norm_eps=1e-3)
    assert model.rope is not None
    # Position 1, feature pair 1 (features 2 and 3) of head_dim 16: the angle 1·θ^(-2/16).
    assert model.rope.cos[1, 2].item() == pytest.approx(math.cos(500.0 ** (-2 / 16)), rel=1e-6)
    assert all(m.eps == 1e-3 for m in model.modules() if hasattr(m, "eps"))


def test_an_untied_head_trains_its_own_matrix() -> None:
    model = tiny(tie_embeddings=False).train()
    F.cross_entropy(
        model(torch.randint(0, 50, (2, 8))).flatten(0, 1), torch.zeros(16, dtype=torch.long)
    ).backward()
    assert model.lm_head.weight.grad is not None and model.tok_emb.weight.grad is not None
    assert not torch.equal(model.lm_head.weight.grad, model.tok_emb.weight.grad)
    assert "lm_head.weight" in dict(model.named_parameters())


# Every switch that changes the computation, crossed (2·2·2·3·2·2 = 96 models, a few ms each).
GRID = [
    dict(zip(("norm", "mlp", "positions", "n_kv_head", "tie_embeddings", "kernels"), values, strict=True))
    for values in itertools.product(
        ["layernorm", "rmsnorm"],
        ["gelu", "swiglu"],
        ["learned", "rope"],
        [4, 2, 1],
        [True, False],
        ["fused", "written_out"],
    )
]


@pytest.mark.parametrize("settings", GRID, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_kv_cache_generation_equals_no_cache_for_every_combination(settings: dict[str, Any]) -> None:
    """Greedy generation with the cache yields the tokens of generation without it, token for token,
    and the cached forward passes give the full forward's logits."""
    biases = settings["mlp"] == "gelu"  # biases on with one MLP, off with the other: both covered
    model = tiny(n_head=4, **settings, qkv_bias=biases, attn_out_bias=biases, mlp_bias=biases)
    x = torch.randint(0, 50, (2, 16))
    caches = [KVCache() for _ in model.blocks]
    with torch.no_grad():
        full = model(x)
        steps = [model(x[:, :6], kv_cache=caches)] + [
            model(x[:, t : t + 1], kv_cache=caches) for t in range(6, 16)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    prompt = x[:, :4]
    cached, uncached = (model.generate(prompt, 12, temperature=0, use_cache=c) for c in (True, False))
    assert torch.equal(cached, uncached)


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
    with pytest.raises(ArgumentError, match="^n_kv_head: n_head=4 is not divisible by n_kv_head=3"):
        GPTConfig(**{**TINY, "n_head": 4, "n_kv_head": 3})
    with pytest.raises(ArgumentError, match="^n_head: RoPE .* head_dim = n_embd / n_head = 5 is odd"):
        GPTConfig(**{**TINY, "n_embd": 10, "positions": "rope"})
    with pytest.raises(ArgumentError, match="^kernels: .*fused, written_out"):
        GPTConfig(kernels="naive")
    for key in ("d_ff", "n_kv_head", "norm_eps", "rope_theta"):
        with pytest.raises(ArgumentError, match=f"^{key}: must be positive"):
            GPTConfig(**{key: 0})
    with pytest.raises(ArgumentError, match="^n_layer: 'abc' is not an integer"):
        GPTConfig(n_layer="abc")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="^dropout: 'high' is not a number"):
        GPTConfig(dropout="high")  # type: ignore[arg-type]
    assert GPTConfig(dropout=0).dropout == 0  # an integer is a number


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.net.n_head=3", "model.net.n_head"),
        ("model.net.norm=batchnorm", "model.net.norm"),
        ("model.net.size=gpt5", "model.net.size"),
        ("model.net.n_kv_head=3", "model.net.n_kv_head"),
    ],
)
def test_config_build_names_the_full_key(override: str, key: str) -> None:
    """The library names its argument; ``config.build`` turns it into the key a user sets."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gpt", override])
    with pytest.raises(ConfigError) as err:
        build(cfg.model, cfg, vocab_size=100)
    assert err.value.key == key


@pytest.mark.parametrize("preset", ["gpt", "gpt_modern", "llama"])
def test_model_presets_compose_into_the_architecture_they_name(preset: str) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gpt", f"model={preset}"])
    net = build(cfg.model, cfg, vocab_size=100).net
    assert isinstance(net, GPT)
    expected = {"gpt": ("layernorm", "learned", 4, True), "gpt_modern": ("rmsnorm", "rope", 4, True)}
    expected["llama"] = ("rmsnorm", "rope", 2, False)
    config = net.config
    assert (config.norm, config.positions, config.kv_heads, config.tie_embeddings) == expected[preset]
    if preset == "llama":  # no bias anywhere
        assert not any(name.endswith("bias") for name, _ in net.named_parameters())
    F.cross_entropy(
        net(torch.randint(0, 100, (2, 8))).flatten(0, 1), torch.zeros(16, dtype=torch.long)
    ).backward()


def test_too_long_input_and_too_large_vocabulary_are_refused() -> None:
    model = tiny()
    with pytest.raises(ArgumentError, match="^context_length: 17 tokens.*16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    model.check_vocab(50)
    for other in (49, 51):  # a smaller tokenizer could not decode what the model generates
        with pytest.raises(
            ArgumentError, match=f"^vocab_size: the tokenizer has {other} tokens, the model 50"
        ):
            model.check_vocab(other)


def test_from_size_keeps_size_values_for_null_overrides() -> None:
    model = GPT.from_size("lab-tiny", vocab_size=77, n_layer=None, dropout=0.2)
    assert model.config.n_layer == NAMED_SIZES["lab-tiny"]["n_layer"]
    assert (model.config.vocab_size, model.config.dropout) == (77, 0.2)


@pytest.mark.parametrize(
    "variant", [{}, LLAMA, {**LLAMA, "n_kv_head": 2, "d_ff": 40}], ids=["gpt2", "llama", "gqa"]
)
def test_flops_per_token_equals_pytorchs_flop_counter(variant: dict[str, object]) -> None:
    """PyTorch's FlopCounterMode counts every matrix multiply of a training step (forward and
    backward). The PaLM formula 6N + 12·L·H·Q·T also counts 6 FLOPs per token for each bias and
    gain (element-wise, which the counter skips): with those taken out the two agree exactly.
    (The written-out kernels, because the counter does not see inside CPU sdpa.)"""
    model = tiny(n_head=4, kernels="written_out", **variant).train()
    batch, length = 3, 16
    x = torch.randint(0, 50, (batch, length))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    tokens = batch * length
    assert model.flops_per_token(length) * tokens == counter.get_total_flops() + 6 * vectors * tokens


def test_num_params_counts_a_tied_matrix_once_and_leaves_out_lookup_tables() -> None:
    tied, untied = tiny(), tiny(tie_embeddings=False)
    table = 50 * 32
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + table
    # Non-embedding: the position table is only looked up, and so is an untied token table.
    assert tied.num_params() == tied.num_params(non_embedding=False) - 16 * 32
    assert untied.num_params() == tied.num_params()

"""LoRA (llm_lab/nn/lora.py) against peft on the same weights: one linear or embedding layer, and
a whole GPT-2 or Llama exported with its adapters and loaded by ``PeftModel.from_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora.layer import Embedding as PeftLoraEmbedding
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn
from transformers import AutoModelForCausalLM

from llm_lab.errors import ArgumentError
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.models.hf import save_hf
from llm_lab.nn.lora import LoRAEmbedding, LoRALinear, add_lora, lora_layers, merge_lora, save_peft_adapter

LLAMA = {
    "norm": "rmsnorm",
    "mlp": "swiglu",
    "positions": "rope",
    "qkv_bias": False,
    "attn_out_bias": False,
    "mlp_bias": False,
    "tie_embeddings": False,
    "n_kv_head": 1,
}


def tiny_gpt(**overrides: object) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, n_embd=32, **overrides)  # type: ignore[arg-type]
    return GPT(config).eval()


def randomize(model: nn.Module) -> None:
    """B (A for an embedding) starts at zero, so the adapted model is the pretrained one: give both
    values, as training would."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for weight in (layer.lora_A, layer.lora_B):
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.1)


def test_a_lora_layer_computes_what_peft_does() -> None:
    """Same base, same A and B: the outputs agree to 1e-6; A is Kaiming-uniform, B zero at first."""
    torch.manual_seed(0)
    base = nn.Linear(24, 40)
    ours = LoRALinear(base, rank=4, alpha=8, dropout=0.0)
    assert torch.count_nonzero(ours.lora_B) == 0 and ours.lora_A.abs().max() <= 1 / 24**0.5
    theirs = PeftLoraLinear(nn.Linear(24, 40), "default", LoraConfig(r=4, lora_alpha=8), r=4, lora_alpha=8)
    with torch.no_grad():
        theirs.base_layer.load_state_dict(base.state_dict())
        ours.lora_B.normal_()
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(3, 5, 24)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == 4 * (24 + 40)


def test_add_lora_freezes_the_rest_and_merge_keeps_the_function() -> None:
    model = tiny_gpt()
    x = torch.randint(0, 64, (2, 10))
    trainable = add_lora(model, rank=4, alpha=8, targets=["qkv", "out_proj"])
    assert trainable == 2 * 4 * ((32 + 96) + (32 + 32))  # 2 blocks × (qkv + out_proj) adapters
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"blocks.{i}.attn.{m}.lora_{ab}" for i in range(2) for m in ("qkv", "out_proj") for ab in "AB"
    }
    randomize(model)
    with torch.no_grad():
        adapted = model(x)
        merged = merge_lora(model)(x)
    assert not lora_layers(model) and isinstance(model.blocks[0].attn.qkv, nn.Linear)
    assert torch.allclose(adapted, merged, atol=1e-5)
    with pytest.raises(ArgumentError, match="targets: no layer is named 'c_attn'"):
        add_lora(tiny_gpt(), targets=["c_attn"])


def test_an_embedding_adapter_computes_what_peft_does_and_merges() -> None:
    """Same table, same A and B: lookups agree with peft's Embedding to 1e-6, and so do the merged
    tables; A starts at zero and B random (peft's init), so the adapter starts as a no-op."""
    torch.manual_seed(0)
    base = nn.Embedding(50, 24)
    ours = LoRAEmbedding(base, rank=4, alpha=8)
    idx = torch.randint(0, 50, (3, 7))
    assert torch.count_nonzero(ours.lora_A) == 0 and torch.count_nonzero(ours.lora_B) == 4 * 24
    assert torch.equal(ours(idx), base(idx))
    theirs = PeftLoraEmbedding(
        nn.Embedding(50, 24), "default", LoraConfig(r=4, lora_alpha=8), r=4, lora_alpha=8
    )
    with torch.no_grad():
        theirs.base_layer.load_state_dict(base.state_dict())
        ours.lora_A.normal_()
        theirs.lora_embedding_A["default"].copy_(ours.lora_A)
        theirs.lora_embedding_B["default"].copy_(ours.lora_B)
    assert torch.allclose(ours(idx), theirs(idx), atol=1e-6)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == 4 * (50 + 24)
    assert torch.allclose(ours.delta(), theirs.get_delta_weight("default"), atol=1e-6)


def test_the_token_embedding_takes_an_adapter_unless_tied_to_the_head() -> None:
    """An untied GPT: tok_emb's adapter trains r·(vocab + n_embd) numbers and merging keeps the
    function. A tied one (GPT-2's default) is refused: merged into the shared table, the adapter
    would change the output head too, so the merged model would not compute the trained one."""
    model = tiny_gpt(tie_embeddings=False)
    x = torch.randint(0, 64, (2, 10))
    assert add_lora(model, rank=4, alpha=8, targets=["tok_emb", "qkv"]) == 4 * (64 + 32) + 2 * 4 * (32 + 96)
    randomize(model)
    with torch.no_grad():
        adapted = model(x)
        assert not torch.allclose(adapted, tiny_gpt(tie_embeddings=False)(x), atol=1e-3)
        merged = merge_lora(model)(x)
    assert isinstance(model.tok_emb, nn.Embedding) and torch.allclose(adapted, merged, atol=1e-5)
    with pytest.raises(ArgumentError, match="targets: tok_emb is tied to lm_head"):
        add_lora(tiny_gpt(), targets=["qkv", "tok_emb"])


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-untied", "llama"])
def test_a_saved_adapter_on_the_exported_base_gives_the_labs_logits(kind: str, tmp_path: Path) -> None:
    """The base exported by save_hf, the adapter by save_peft_adapter: peft's logits equal the
    lab's model with LoRA (atol 1e-4), attention and MLP adapted (Llama's q/k/v cut from one qkv),
    and the token embedding where it is not tied to the head (wte / embed_tokens)."""
    settings = {"llama": LLAMA, "gpt2-untied": {"tie_embeddings": False}}.get(kind, {})
    model = tiny_gpt(**settings)
    save_hf(model, tmp_path / "base")
    targets = (
        ["qkv", "out_proj", "fc", "proj"]
        if kind.startswith("gpt2")
        else ["qkv", "out_proj", "gate", "up", "proj"]
    )
    if kind != "gpt2":
        targets.append("tok_emb")
    add_lora(model, rank=4, alpha=16, targets=targets)
    randomize(model)
    save_peft_adapter(model, tmp_path / "adapter", str(tmp_path / "base"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    peft_model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    x = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.allclose(peft_model(x).logits, model(x), atol=1e-4)

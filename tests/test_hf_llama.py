"""Hugging Face LLaMA ↔ the lab's GPT: the same logits both ways (float32, within 1e-5), the same
greedy continuation as transformers' ``generate``, and a DataError naming file and key for every
config.json the lab cannot use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llm_lab.errors import ArgumentError, DataError
from llm_lab.models import GPT
from llm_lab.models.gpt import GPTConfig
from llm_lab.models.hf import halves_to_pairs, load_hf, pairs_to_halves, save_hf

# A tiny LLaMA with every setting away from its default: GQA (4 query heads, 2 key/value heads),
# rms_norm_eps and rope_theta not HF's defaults, an untied head; and one with biases and tying.
TINY: dict[str, Any] = {
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 48,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500.0,
    "tie_word_embeddings": False,
}
VARIANTS = {
    "gqa-untied": {},
    "mha-tied-biases": {
        "num_key_value_heads": 4,
        "tie_word_embeddings": True,
        "attention_bias": True,
        "mlp_bias": True,
    },
}


def randomise(model: torch.nn.Module) -> None:
    """Random biases and norm gains (initialised to 0 and 1), so that they are tested too."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(mean=float("norm" in name), std=0.1)


@pytest.fixture(scope="module", params=list(VARIANTS))
def hf_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny LlamaForCausalLM saved by transformers itself."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY, **VARIANTS[request.param]}))
    randomise(model)
    folder = tmp_path_factory.mktemp(f"hf_llama_{request.param}")
    model.save_pretrained(folder)
    return folder


def reference(folder: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def max_logit_difference(ours: GPT, theirs: LlamaForCausalLM, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours.eval()(ids) - theirs(ids).logits).abs().max().item()


def test_hf_llama_loads_into_ours_with_the_same_logits(hf_folder: Path) -> None:
    ours = load_hf(hf_folder)
    theirs = reference(hf_folder)
    config = ours.config
    assert (config.norm, config.mlp, config.positions) == ("rmsnorm", "swiglu", "rope")
    assert (config.norm_eps, config.rope_theta) == (1e-5, 500.0)
    assert config.kv_heads == theirs.config.num_key_value_heads
    assert config.tie_embeddings == theirs.config.tie_word_embeddings
    ids = torch.randint(0, 100, (3, 48))
    assert max_logit_difference(ours, theirs, ids) <= 1e-5


@pytest.mark.parametrize("kernels", ["fused", "written_out"])
def test_ours_saved_as_llama_loads_in_transformers_with_the_same_logits(tmp_path: Path, kernels: str) -> None:
    torch.manual_seed(1)
    config = GPTConfig(
        vocab_size=100,
        context_length=48,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        d_ff=96,
        norm="rmsnorm",
        norm_eps=1e-5,
        mlp="swiglu",
        positions="rope",
        rope_theta=500.0,
        qkv_bias=False,
        attn_out_bias=False,
        mlp_bias=False,
        tie_embeddings=False,
        kernels=kernels,
    )
    ours = GPT(config)
    randomise(ours)
    save_hf(ours, tmp_path)
    theirs = reference(tmp_path)
    assert theirs.config.num_key_value_heads == 2 and theirs.config.rms_norm_eps == 1e-5
    ids = torch.randint(0, 100, (2, 48))
    assert max_logit_difference(ours, theirs, ids) <= 1e-5
    # ...and back: the same tensors, bit for bit.
    again = load_hf(tmp_path)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_greedy_kv_cache_generation_matches_transformers(hf_folder: Path) -> None:
    ours = load_hf(hf_folder)
    theirs = reference(hf_folder)
    prompt = torch.randint(1, 100, (2, 5))
    expected = theirs.generate(
        prompt, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=True
    )
    assert torch.equal(ours.generate(prompt, 20, temperature=0, use_cache=True), expected)


def test_the_rotary_row_permutation_is_invertible_and_pairs_i_with_i_plus_half() -> None:
    rows = torch.arange(2 * 8).float()  # two heads of head_dim 8
    ours = halves_to_pairs(rows, n_heads=2)
    # Head 0: HF rows (0, 4) become our pair (0, 1), (1, 5) the pair (2, 3), ...
    assert ours[:8].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert ours[8:].tolist() == [8, 12, 9, 13, 10, 14, 11, 15]
    weights = torch.randn(16, 3)
    assert torch.equal(pairs_to_halves(halves_to_pairs(weights, 2), 2), weights)


# --- config.json the lab cannot use ---------------------------------------------------------------


def with_config(hf_folder: Path, tmp_path: Path, text: str | bytes) -> Path:
    """A copy of the folder whose config.json holds ``text``."""
    (tmp_path / "model.safetensors").write_bytes((hf_folder / "model.safetensors").read_bytes())
    config = tmp_path / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp_path


def edited(hf_folder: Path, **changes: Any) -> str:
    """The folder's config.json with keys changed (a value of ... deletes the key)."""
    settings = json.loads((hf_folder / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            del settings[key]
        else:
            settings[key] = value
    return json.dumps(settings)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: bytes(range(256)), "not UTF-8 text"),
        (lambda f: (f / "config.json").read_text()[:40], "not valid JSON.*truncated"),
        (lambda f: "[1, 2]", "holds a JSON list"),
        (lambda f: edited(f, hidden_size=...), "missing key 'hidden_size'"),
        (lambda f: edited(f, hidden_size="64"), "hidden_size must be int, got '64'"),
        (lambda f: edited(f, rms_norm_eps="1e-5"), "rms_norm_eps must be float"),
        (lambda f: edited(f, tie_word_embeddings=1), "tie_word_embeddings must be bool"),
        (lambda f: edited(f, num_attention_heads=5), "num_attention_heads: n_embd=64 is not divisible"),
        (lambda f: edited(f, num_key_value_heads=3), "num_key_value_heads: n_head=4 is not divisible"),
        (lambda f: edited(f, head_dim=32), "head_dim=32 differs from hidden_size / num_attention_heads = 16"),
        (lambda f: edited(f, num_hidden_layers=0), "num_hidden_layers: must be positive"),
        (lambda f: edited(f, hidden_act="gelu"), "hidden_act='gelu' is not supported"),
        (
            lambda f: edited(f, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}),
            "rope_type='llama3'",
        ),
        (lambda f: edited(f, model_type="mistral"), "model_type='mistral' is not one the lab loads"),
        (lambda f: edited(f, model_type=...), "missing key 'model_type'"),
    ],
)
def test_unusable_config_json_is_a_data_error_naming_file_and_key(
    hf_folder: Path, tmp_path: Path, change: Any, message: str
) -> None:
    folder = with_config(hf_folder, tmp_path, change(hf_folder))
    with pytest.raises(DataError, match=message) as err:
        load_hf(folder)
    assert str(err.value).startswith(f"{folder / 'config.json'}: ")


def test_weights_that_do_not_fit_are_a_data_error_naming_the_file(hf_folder: Path, tmp_path: Path) -> None:
    folder = with_config(hf_folder, tmp_path, edited(hf_folder, intermediate_size=128))
    # The file's own tensor name, its shape and the shape the config asks for.
    with pytest.raises(
        DataError,
        match=r"model.safetensors: tensor model\.layers\.0\.mlp\.down_proj\.weight "
        r"has shape \(64, 96\), and .*config.json asks for \(64, 128\)",
    ):
        load_hf(folder)
    folder = with_config(hf_folder, tmp_path, edited(hf_folder, num_hidden_layers=3))
    with pytest.raises(DataError, match="model.safetensors: the LLaMA checkpoint lacks"):
        load_hf(folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="model.safetensors: not a readable safetensors file"):
        load_hf(folder)


def test_settings_hf_llama_cannot_hold_are_refused_on_save(tmp_path: Path) -> None:
    base = {
        "vocab_size": 10,
        "context_length": 8,
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 8,
        "positions": "rope",
    }
    for changes, arg in (
        ({"norm": "layernorm", "mlp": "swiglu"}, "norm"),
        ({"norm": "rmsnorm", "mlp": "gelu"}, "mlp"),
        ({"norm": "rmsnorm", "mlp": "swiglu", "qkv_bias": False, "attn_out_bias": True}, "attn_out_bias"),
    ):
        with pytest.raises(ArgumentError) as err:
            save_hf(GPT(GPTConfig(**base, **changes)), tmp_path)
        assert err.value.arg == arg

"""Hugging Face GPT-2 ↔ ours: same logits both ways, same greedy continuation, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from llm_lab.errors import ArgumentError, DataError
from llm_lab.models import GPT, load_hf, save_hf
from llm_lab.models.gpt import GPTConfig


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny GPT2LMHeadModel saved by transformers itself."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # GPT-2 inits biases and LN to 0/1: randomise them so they are tested
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.normal_(std=0.1)
    folder = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(folder)
    return folder


def load_reference(folder: Path) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()


def test_hf_checkpoint_loads_into_ours_with_the_same_logits(hf_folder: Path) -> None:
    ours = load_hf(hf_folder).eval()
    reference = load_reference(hf_folder)
    x = torch.randint(0, 100, (3, 32))
    with torch.no_grad():
        diff = (ours(x) - reference(x).logits).abs().max().item()
    assert diff <= 1e-5


def test_ours_saved_as_hf_loads_in_transformers_with_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ours = GPT(GPTConfig(vocab_size=100, context_length=32, n_layer=2, n_head=4, n_embd=64)).eval()
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                param.normal_(std=0.1)
    save_hf(ours, tmp_path)
    reference = load_reference(tmp_path)
    assert reference.lm_head.weight.data_ptr() == reference.transformer.wte.weight.data_ptr()
    x = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        diff = (ours(x) - reference(x).logits).abs().max().item()
    assert diff <= 1e-5


def test_greedy_generation_matches_transformers(hf_folder: Path) -> None:
    ours = load_hf(hf_folder)
    reference = load_reference(hf_folder)
    prompt = torch.randint(1, 100, (2, 4))
    expected = reference.generate(
        prompt, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    assert torch.equal(ours.generate(prompt, 20, temperature=0), expected)


def test_original_hub_layout_without_prefix_and_with_mask_buffers_loads(
    hf_folder: Path, tmp_path: Path
) -> None:
    """OpenAI's hub files were saved from GPT2Model: no ``transformer.`` prefix, extra buffers."""
    tensors = load_file(str(hf_folder / "model.safetensors"))
    plain = {k.removeprefix("transformer."): v for k, v in tensors.items() if "lm_head" not in k}
    plain["h.0.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
    save_file(plain, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((hf_folder / "config.json").read_text())
    x = torch.randint(0, 100, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(load_hf(tmp_path).eval()(x), load_hf(hf_folder).eval()(x), atol=0, rtol=0)


def test_bad_folders_and_unexportable_models_fail_clearly(hf_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="config.json"):
        load_hf(tmp_path)
    config = json.loads((hf_folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    (tmp_path / "model.safetensors").write_bytes((hf_folder / "model.safetensors").read_bytes())
    with pytest.raises(DataError, match="lacks 12 tensors"):
        load_hf(tmp_path)
    small = {"vocab_size": 10, "context_length": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}
    for changes, arg in (
        ({"norm": "rmsnorm"}, "norm"),
        ({"mlp_bias": False}, "mlp_bias"),
        ({"n_kv_head": 1}, "n_kv_head"),
    ):
        with pytest.raises(ArgumentError) as err:  # learned positions: the GPT-2 format
            save_hf(GPT(GPTConfig(**small, **changes)), tmp_path / "out")
        assert err.value.arg == arg


@pytest.mark.parametrize("direction", ["hf-to-ours", "ours-to-hf"])
def test_gpt2_settings_beyond_the_defaults_survive_both_ways(tmp_path: Path, direction: str) -> None:
    """n_inner, layer_norm_epsilon and an untied head: what GPT2Config can vary, we read and write."""
    torch.manual_seed(2)
    settings = {"vocab_size": 100, "context_length": 32, "n_layer": 2, "n_head": 4, "n_embd": 64}
    if direction == "hf-to-ours":
        hf_config = GPT2Config(
            **{"n_positions": 32, "n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 100},
            n_inner=96,
            layer_norm_epsilon=1e-3,
            tie_word_embeddings=False,
        )
        GPT2LMHeadModel(hf_config).save_pretrained(tmp_path)
        ours = load_hf(tmp_path)
        assert (ours.config.d_ff, ours.config.norm_eps, ours.config.tie_embeddings) == (96, 1e-3, False)
    else:
        ours = GPT(GPTConfig(**settings, d_ff=96, norm_eps=1e-3, tie_embeddings=False))
        save_hf(ours, tmp_path)
    reference = load_reference(tmp_path)
    assert reference.lm_head.weight.data_ptr() != reference.transformer.wte.weight.data_ptr()
    x = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        diff = (ours.eval()(x) - reference(x).logits).abs().max().item()
    assert diff <= 1e-5

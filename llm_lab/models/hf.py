"""Hugging Face GPT-2 checkpoints ↔ the lab's :class:`~llm_lab.models.gpt.GPT`.

A HF GPT-2 folder holds ``config.json`` and ``model.safetensors``; we read and write both directly
(safetensors holds only tensors, so loading cannot run code -- unlike a pickled ``.bin``).

Two differences in layout (Radford et al. 2019 kept OpenAI's TensorFlow conventions):
- HF's ``Conv1D`` stores a linear map as (in, out), the transpose of ``nn.Linear``'s (out, in);
- q, k and v are one fused ``c_attn`` whose output columns are [q | k | v], each split into heads
  contiguously -- exactly the layout of our attention's ``qkv``, so it only needs the transpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from llm_lab.errors import ArgumentError, DataError
from llm_lab.models.gpt import GPT, GPTConfig

# (HF name inside block i, our name inside block i, stored transposed by Conv1D?)
_BLOCK_TABLE = [
    ("ln_1.weight", "ln_1.weight", False),
    ("ln_1.bias", "ln_1.bias", False),
    ("attn.c_attn.weight", "attn.qkv.weight", True),
    ("attn.c_attn.bias", "attn.qkv.bias", False),
    ("attn.c_proj.weight", "attn.out_proj.weight", True),
    ("attn.c_proj.bias", "attn.out_proj.bias", False),
    ("ln_2.weight", "ln_2.weight", False),
    ("ln_2.bias", "ln_2.bias", False),
    ("mlp.c_fc.weight", "mlp.fc.weight", True),
    ("mlp.c_fc.bias", "mlp.fc.bias", False),
    ("mlp.c_proj.weight", "mlp.proj.weight", True),
    ("mlp.c_proj.bias", "mlp.proj.bias", False),
]
_TOP_TABLE = [
    ("wte.weight", "tok_emb.weight"),
    ("wpe.weight", "pos_emb.weight"),
    ("ln_f.weight", "ln_f.weight"),
    ("ln_f.bias", "ln_f.bias"),
]


def name_map(n_layer: int) -> list[tuple[str, str, bool]]:
    """Every (HF name without ``transformer.``, our name, transposed?) of an ``n_layer`` GPT-2."""
    table = [(hf, ours, False) for hf, ours in _TOP_TABLE]
    for i in range(n_layer):
        table += [(f"h.{i}.{hf}", f"blocks.{i}.{ours}", t) for hf, ours, t in _BLOCK_TABLE]
    return table


def config_from_hf(hf: dict[str, Any]) -> GPTConfig:
    """Our config for a HF ``GPT2Config`` dict (``config.json``)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise DataError(f"not a GPT-2 checkpoint: model_type={hf.get('model_type')!r}")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise DataError(
            f"unsupported activation {hf['activation_function']!r} (GPT-2 uses "
            "gelu_new, the tanh approximation)"
        )
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise DataError(
            "unsupported GPT-2 attention variant (scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn)"
        )
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["n_positions"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
    )


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A ``config.json`` dict that ``transformers.GPT2Config`` reads."""
    for key, gpt2_value in (
        ("norm", "layernorm"),
        ("mlp", "gelu"),
        ("positions", "learned"),
        ("qkv_bias", True),
    ):
        if getattr(config, key) != gpt2_value:
            raise ArgumentError(
                key,
                f"is {getattr(config, key)!r}, which the HF GPT-2 format cannot hold",
                f"only {gpt2_value!r} can be exported",
            )
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # None means 4·n_embd, our FeedForward's default
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": True,
    }


def state_dict_from_hf(hf_tensors: dict[str, Tensor], n_layer: int) -> dict[str, Tensor]:
    """Rename (and un-transpose) HF GPT-2 tensors into our parameter names."""
    # GPT2LMHeadModel prefixes "transformer."; the original hub files (saved from GPT2Model) do not.
    plain = {k.removeprefix("transformer."): v for k, v in hf_tensors.items()}
    missing = [hf for hf, _, _ in name_map(n_layer) if hf not in plain]
    if missing:
        raise DataError(f"GPT-2 checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    return {ours: plain[hf].t() if transposed else plain[hf] for hf, ours, transposed in name_map(n_layer)}


def state_dict_to_hf(model: GPT) -> dict[str, Tensor]:
    """Our parameters under GPT2LMHeadModel's names, in Conv1D layout, contiguous for safetensors."""
    ours = model.state_dict()
    return {
        f"transformer.{hf}": (ours[name].t() if transposed else ours[name]).contiguous()
        for hf, name, transposed in name_map(model.config.n_layer)
    }


def _resolve(path_or_name: str | Path) -> Path:
    """A local folder as is; otherwise download ``config.json`` + ``model.safetensors`` (online)."""
    path = Path(path_or_name)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub ships with transformers
        raise DataError(f"{path_or_name} is not a folder and huggingface_hub is missing") from err
    folder = snapshot_download(repo_id=str(path_or_name), allow_patterns=["config.json", "model.safetensors"])
    return Path(folder)


def load_hf(path_or_name: str | Path) -> GPT:
    """A GPT with the weights of a HF GPT-2 folder or hub name (e.g. ``gpt2``)."""
    folder = _resolve(path_or_name)
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise DataError(f"{file} not found: a HF GPT-2 folder needs config.json and model.safetensors")
    config = config_from_hf(json.loads(config_file.read_text(encoding="utf-8")))
    model = GPT(config)
    weights = state_dict_from_hf(load_file(str(weights_file)), config.n_layer)
    # strict=False only because the tied head is absent from the file; check everything else.
    result = model.load_state_dict(weights, strict=False)
    if set(result.missing_keys) - {"lm_head.weight"} or result.unexpected_keys:
        raise DataError(
            f"weights do not fit the config: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model


def save_hf(model: GPT, path: str | Path) -> None:
    """Write ``path/config.json`` and ``path/model.safetensors`` in HF GPT-2 format."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = config_to_hf(model.config)
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2), encoding="utf-8")
    with torch.no_grad():
        save_file(state_dict_to_hf(model), str(folder / "model.safetensors"), metadata={"format": "pt"})

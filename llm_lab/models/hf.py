"""Hugging Face checkpoints ↔ the lab's :class:`~llm_lab.models.gpt.GPT`: GPT-2 and LLaMA.

A HF folder holds ``config.json`` and ``model.safetensors``; we read and write both directly
(safetensors holds only tensors, so loading cannot run code -- unlike a pickled ``.bin``).
:func:`load_hf` reads ``model_type`` and returns a GPT configured as a ``GPT2LMHeadModel`` or a
``LlamaForCausalLM``; :func:`save_hf` writes whichever of the two the model's config is (learned
positions: GPT-2; rotary: LLaMA).

GPT-2's layout differs from ours in one way (Radford et al. 2019 kept OpenAI's TensorFlow
conventions): its ``Conv1D`` stores a linear map as (in, out), the transpose of ``nn.Linear``;
its fused ``c_attn`` is exactly our ``qkv``.

LLaMA keeps q, k, v as three projections (we stack them into ``qkv``), and its rotary embedding
pairs feature i of a head with feature i + d/2 (``rotate_half``), where the lab's RoPE pairs
(2i, 2i+1) as RoFormer writes it. Attention scores only see q·k, so permuting the rows of every
q and k head the same way changes nothing else: on load each head's rows (0..d/2-1 | d/2..d-1)
are interleaved into the lab's order, and un-interleaved on save. The lesson's RoPE stays as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from llm_lab.atomic import replacing
from llm_lab.errors import ArgumentError, DataError
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.nn.feedforward import swiglu_hidden

_REQUIRED = object()
ConfigTable = list[tuple[str, str, type, Any]]

# (config.json key, the GPTConfig field it sets, JSON type, default when absent or null)
GPT2_CONFIG: ConfigTable = [
    ("vocab_size", "vocab_size", int, _REQUIRED),
    ("n_positions", "context_length", int, _REQUIRED),
    ("n_layer", "n_layer", int, _REQUIRED),
    ("n_head", "n_head", int, _REQUIRED),
    ("n_embd", "n_embd", int, _REQUIRED),
    ("n_inner", "d_ff", int, None),  # null: 4·n_embd
    ("layer_norm_epsilon", "norm_eps", float, 1e-5),
    ("tie_word_embeddings", "tie_embeddings", bool, True),
]
LLAMA_CONFIG: ConfigTable = [
    ("vocab_size", "vocab_size", int, _REQUIRED),
    ("max_position_embeddings", "context_length", int, _REQUIRED),
    ("num_hidden_layers", "n_layer", int, _REQUIRED),
    ("num_attention_heads", "n_head", int, _REQUIRED),
    ("hidden_size", "n_embd", int, _REQUIRED),
    ("num_key_value_heads", "n_kv_head", int, None),  # null: num_attention_heads
    ("intermediate_size", "d_ff", int, _REQUIRED),
    ("rms_norm_eps", "norm_eps", float, 1e-6),
    ("tie_word_embeddings", "tie_embeddings", bool, False),
    ("attention_bias", "qkv_bias", bool, False),  # HF's one flag covers q, k, v and o
    ("mlp_bias", "mlp_bias", bool, False),
]

# (HF name inside block i, our name inside block i, stored transposed by Conv1D?)
GPT2_BLOCK = [
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
_GPT2_TOP = [
    ("wte.weight", "tok_emb.weight"),
    ("wpe.weight", "pos_emb.weight"),
    ("ln_f.weight", "ln_f.weight"),
    ("ln_f.bias", "ln_f.bias"),
]
# (HF name inside model.layers.i, our name inside blocks.i), besides q/k/v (see _llama_qkv_names).
LLAMA_BLOCK = [
    ("input_layernorm.weight", "ln_1.weight"),
    ("self_attn.o_proj.weight", "attn.out_proj.weight"),
    ("self_attn.o_proj.bias", "attn.out_proj.bias"),
    ("post_attention_layernorm.weight", "ln_2.weight"),
    ("mlp.gate_proj.weight", "mlp.gate.weight"),
    ("mlp.gate_proj.bias", "mlp.gate.bias"),
    ("mlp.up_proj.weight", "mlp.up.weight"),
    ("mlp.up_proj.bias", "mlp.up.bias"),
    ("mlp.down_proj.weight", "mlp.proj.weight"),
    ("mlp.down_proj.bias", "mlp.proj.bias"),
]


# --- config.json -----------------------------------------------------------------------------------


def read_json(file: Path) -> dict[str, Any]:
    """The JSON object in ``file``; a DataError naming the file if it is not one."""
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except OSError as err:
        raise DataError(f"{file}: cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{file}: not UTF-8 text (a binary file?); config.json must be JSON") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{file}: not valid JSON ({err.msg}, line {err.lineno}); a truncated copy? "
            "save or download it again"
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{file}: holds a JSON {type(data).__name__}, not an object of settings")
    return data


def _value(hf: dict[str, Any], file: Path, key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``hf[key]`` checked to be a ``kind`` (an int is a float too), or ``default`` when absent or
    null; a DataError naming the file and the key otherwise."""
    value = hf.get(key)
    if value is None:
        if default is _REQUIRED:
            raise DataError(f"{file}: missing key {key!r}")
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{file}: {key} must be {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _require(hf: dict[str, Any], file: Path, key: str, allowed: tuple[Any, ...], default: Any) -> None:
    """A DataError unless ``hf[key]`` (``default`` if absent) is one of the values we implement."""
    value = hf.get(key, default)
    if value not in allowed:
        raise DataError(
            f"{file}: {key}={value!r} is not supported (the lab implements {', '.join(map(repr, allowed))})"
        )


def _gpt_config(hf: dict[str, Any], file: Path, table: ConfigTable, **fixed: Any) -> GPTConfig:
    """A GPTConfig from the keys of ``table`` plus ``fixed`` settings; a DataError naming the file
    and the HF key if the values do not make a model."""
    settings = {ours: _value(hf, file, key, kind, default) for key, ours, kind, default in table}
    try:
        return GPTConfig(**settings, **fixed)
    except ArgumentError as err:
        key = next((k for k, ours, _, _ in table if ours == err.arg), err.arg)
        raise DataError(f"{file}: {key}: {err.problem}") from None


def config_from_gpt2(hf: dict[str, Any], file: Path) -> GPTConfig:
    """Our config for a HF ``GPT2Config`` dict read from ``file``."""
    _require(hf, file, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
    _require(hf, file, "scale_attn_weights", (True,), True)
    _require(hf, file, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(hf, file, "reorder_and_upcast_attn", (False,), False)
    return _gpt_config(hf, file, GPT2_CONFIG)


def config_from_llama(hf: dict[str, Any], file: Path) -> GPTConfig:
    """Our config for a HF ``LlamaConfig`` dict read from ``file``."""
    _require(hf, file, "hidden_act", ("silu",), "silu")
    _require(hf, file, "pretraining_tp", (1,), 1)
    # transformers 5 nests the rotary settings in rope_parameters; 4.x had rope_theta + rope_scaling.
    rope = _value(hf, file, "rope_parameters", dict, {})
    _require(rope, file, "rope_type", ("default",), "default")
    _require(_value(hf, file, "rope_scaling", dict, {}), file, "rope_type", ("default",), "default")
    theta = _value(rope, file, "rope_theta", float, _value(hf, file, "rope_theta", float, 10000.0))
    width, heads = _value(hf, file, "hidden_size", int), _value(hf, file, "num_attention_heads", int)
    if heads > 0 and width % heads == 0:
        head_dim = _value(hf, file, "head_dim", int, width // heads)
        if head_dim != width // heads:
            raise DataError(
                f"{file}: head_dim={head_dim} differs from hidden_size / num_attention_heads = "
                f"{width // heads} (the lab's attention needs them equal)"
            )
    attention_bias = _value(hf, file, "attention_bias", bool, False)
    return _gpt_config(
        hf,
        file,
        LLAMA_CONFIG,
        norm="rmsnorm",
        mlp="swiglu",
        positions="rope",
        rope_theta=theta,
        attn_out_bias=attention_bias,
    )


def _export_check(config: GPTConfig, fmt: str, required: dict[str, Any]) -> None:
    """An ArgumentError naming the first setting that differs from what the HF ``fmt`` holds."""
    for key, value in required.items():
        if getattr(config, key) != value:
            raise ArgumentError(
                key,
                f"is {getattr(config, key)!r}, which the HF {fmt} format cannot hold",
                f"only {key}={value!r} can be exported as {fmt}",
            )


def config_to_gpt2(config: GPTConfig) -> dict[str, Any]:
    """A ``config.json`` dict that ``transformers.GPT2Config`` reads."""
    gpt2 = {"norm": "layernorm", "mlp": "gelu", "qkv_bias": True, "attn_out_bias": True, "mlp_bias": True}
    _export_check(config, "GPT-2", gpt2)
    if config.kv_heads != config.n_head:
        raise ArgumentError("n_kv_head", "GPT-2 has no grouped-query attention", "export with n_kv_head=null")
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.d_ff,  # None means 4·n_embd, as for our FeedForward
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
    }


def config_to_llama(config: GPTConfig, d_ff: int) -> dict[str, Any]:
    """A ``config.json`` dict that ``transformers.LlamaConfig`` reads (``d_ff``: the MLP's width)."""
    _export_check(config, "LLaMA", {"norm": "rmsnorm", "mlp": "swiglu"})
    if config.attn_out_bias != config.qkv_bias:
        raise ArgumentError(
            "attn_out_bias",
            "HF LLaMA has one attention_bias for q, k, v and the output projection",
            "give attn_out_bias the value of qkv_bias",
        )
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.context_length,
        "hidden_size": config.n_embd,
        "intermediate_size": d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4.x reads this...
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # ...and 5.x this
        "attention_bias": config.qkv_bias,
        "attention_dropout": config.dropout,
        "mlp_bias": config.mlp_bias,
        "tie_word_embeddings": config.tie_embeddings,
    }


# --- tensors ---------------------------------------------------------------------------------------


def halves_to_pairs(rows: Tensor, n_heads: int) -> Tensor:
    """HF LLaMA's q or k rows → the lab's: in each head, rows i and i + d/2 (a rotate_half pair)
    become rows 2i and 2i+1 (a RoFormer pair). Works on (rows, in) weights and (rows,) biases."""
    return rows.unflatten(0, (n_heads, 2, -1)).transpose(1, 2).flatten(0, 2)


def pairs_to_halves(rows: Tensor, n_heads: int) -> Tensor:
    """The inverse of :func:`halves_to_pairs`: the lab's q or k rows → HF LLaMA's."""
    return rows.unflatten(0, (n_heads, -1, 2)).transpose(1, 2).flatten(0, 2)


def gpt2_names(config: GPTConfig) -> list[tuple[str, str, bool]]:
    """Every (HF name without ``transformer.``, our name, transposed?) of a GPT-2 of this config."""
    table = [(hf, ours, False) for hf, ours in _GPT2_TOP]
    if not config.tie_embeddings:
        table.append(("lm_head.weight", "lm_head.weight", False))
    for i in range(config.n_layer):
        table += [(f"h.{i}.{hf}", f"blocks.{i}.{ours}", t) for hf, ours, t in GPT2_BLOCK]
    return table


def llama_names(config: GPTConfig) -> list[tuple[str, str]]:
    """Every (HF name, our name) of a LLaMA of this config, except the q/k/v projections."""
    table = [("model.embed_tokens.weight", "tok_emb.weight"), ("model.norm.weight", "ln_f.weight")]
    if not config.tie_embeddings:
        table.append(("lm_head.weight", "lm_head.weight"))
    block = [
        (hf, ours)
        for hf, ours in LLAMA_BLOCK
        if not (hf.endswith("o_proj.bias") and not config.attn_out_bias)
        and not (hf.startswith("mlp.") and hf.endswith(".bias") and not config.mlp_bias)
    ]
    for i in range(config.n_layer):
        table += [(f"model.layers.{i}.{hf}", f"blocks.{i}.{ours}") for hf, ours in block]
    return table


def _llama_qkv_names(config: GPTConfig) -> list[tuple[list[str], str]]:
    """([HF q, k, v names], our qkv name) for every weight and (with biases) bias of a LLaMA."""
    leaves = ["weight", "bias"] if config.qkv_bias else ["weight"]
    return [
        ([f"model.layers.{i}.self_attn.{p}_proj.{leaf}" for p in "qkv"], f"blocks.{i}.attn.qkv.{leaf}")
        for i in range(config.n_layer)
        for leaf in leaves
    ]


def _check_names(tensors: dict[str, Tensor], names: list[str], file: Path, fmt: str) -> None:
    missing = [name for name in names if name not in tensors]
    if missing:
        raise DataError(f"{file}: the {fmt} checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")


def state_dict_from_gpt2(tensors: dict[str, Tensor], config: GPTConfig, file: Path) -> dict[str, Tensor]:
    """Rename (and un-transpose) HF GPT-2 tensors into our parameter names."""
    # GPT2LMHeadModel prefixes "transformer."; the original hub files (saved from GPT2Model) do not.
    plain = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    names = gpt2_names(config)
    _check_names(plain, [hf for hf, _, _ in names], file, "GPT-2")
    return {ours: plain[hf].t() if transposed else plain[hf] for hf, ours, transposed in names}


def state_dict_to_gpt2(model: GPT) -> dict[str, Tensor]:
    """Our parameters under GPT2LMHeadModel's names, in Conv1D layout."""
    ours = model.state_dict()
    return {
        hf if hf.startswith("lm_head") else f"transformer.{hf}": ours[name].t() if transposed else ours[name]
        for hf, name, transposed in gpt2_names(model.config)
    }


def state_dict_from_llama(tensors: dict[str, Tensor], config: GPTConfig, file: Path) -> dict[str, Tensor]:
    """HF LLaMA tensors under our names: q, k, v stacked into qkv, q and k rows reordered."""
    names, stacked = llama_names(config), _llama_qkv_names(config)
    _check_names(tensors, [hf for hf, _ in names] + [hf for trio in stacked for hf in trio[0]], file, "LLaMA")
    ours = {name: tensors[hf] for hf, name in names}
    for (q, k, v), name in stacked:
        ours[name] = torch.cat(
            [
                halves_to_pairs(tensors[q], config.n_head),
                halves_to_pairs(tensors[k], config.kv_heads),
                tensors[v],
            ]
        )
    return ours


def state_dict_to_llama(model: GPT) -> dict[str, Tensor]:
    """Our parameters under LlamaForCausalLM's names: qkv split, q and k rows reordered back."""
    config, ours = model.config, model.state_dict()
    tensors = {hf: ours[name] for hf, name in llama_names(config)}
    q_rows, kv_rows = config.n_head * config.head_dim, config.kv_heads * config.head_dim
    for (q, k, v), name in _llama_qkv_names(config):
        q_part, k_part, v_part = ours[name].split([q_rows, kv_rows, kv_rows])
        tensors[q] = pairs_to_halves(q_part, config.n_head)
        tensors[k] = pairs_to_halves(k_part, config.kv_heads)
        tensors[v] = v_part
    return tensors


# --- folders ---------------------------------------------------------------------------------------


def _resolve(path_or_name: str | Path) -> Path:
    """A local folder as is; otherwise download ``config.json`` + ``model.safetensors`` (online)."""
    path = Path(path_or_name)
    if path.is_dir():
        return path
    name = str(path_or_name)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise DataError(
            f"{path_or_name}: no such folder (a HF model folder holds config.json and model.safetensors)"
        )
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id=name, allow_patterns=["config.json", "model.safetensors"])
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, bad name: all one line for the user
        raise DataError(f"{name}: not a local folder, and not downloadable from the hub ({err})") from None
    return Path(folder)


def load_hf(path_or_name: str | Path) -> GPT:
    """The lab's GPT with the weights of a HF GPT-2 or LLaMA folder (or, online, a hub name such
    as ``gpt2``), chosen by ``model_type`` in its ``config.json``."""
    folder = _resolve(path_or_name)
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise DataError(f"{file} not found: a HF model folder needs config.json and model.safetensors")
    hf = read_json(config_file)
    model_type = _value(hf, config_file, "model_type", str)
    if model_type == "gpt2":
        config = config_from_gpt2(hf, config_file)
    elif model_type == "llama":
        config = config_from_llama(hf, config_file)
    else:
        raise DataError(f"{config_file}: model_type={model_type!r} is not one the lab loads (gpt2, llama)")
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{weights_file}: not a readable safetensors file ({err})") from None
    model = GPT(config)
    # The shapes the config asks for, under the file's own names: the lab's model, exported.
    expected = (state_dict_to_gpt2 if model_type == "gpt2" else state_dict_to_llama)(model)
    for name, tensor in tensors.items():
        want = expected.get(name, expected.get(f"transformer.{name}"))
        if want is not None and tuple(tensor.shape) != tuple(want.shape):
            raise DataError(
                f"{weights_file}: tensor {name} has shape {tuple(tensor.shape)}, and {config_file} "
                f"asks for {tuple(want.shape)} (the weights and the config are of different models)"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(
                f"{weights_file}: tensor {name} holds NaN or infinite values; the model cannot be used"
            )
    from_hf = state_dict_from_gpt2 if model_type == "gpt2" else state_dict_from_llama
    weights = from_hf(tensors, config, weights_file)
    if config.tie_embeddings:  # one matrix, two names in our state dict
        weights["lm_head.weight"] = weights["tok_emb.weight"]
    model.load_state_dict(weights)
    return model


def to_hf(model: GPT) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``config.json``'s settings and the tensors under Hugging Face's names: GPT-2 for a model
    with learned positions, LLaMA for one with rotary positions."""
    config = model.config
    if config.positions == "learned":
        return config_to_gpt2(config), state_dict_to_gpt2(model)
    d_ff = config.d_ff or swiglu_hidden(config.n_embd)
    return config_to_llama(config, d_ff), state_dict_to_llama(model)


def write_hf(folder: str | Path, hf_config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Write ``folder/config.json`` and ``folder/model.safetensors``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2), encoding="utf-8")
    contiguous = {name: tensor.detach().contiguous() for name, tensor in tensors.items()}
    with replacing(folder / "model.safetensors") as tmp:  # safetensors alone would make it 0600
        save_file(contiguous, str(tmp), metadata={"format": "pt"})


def save_hf(model: GPT, path: str | Path) -> None:
    """Write ``path/config.json`` and ``path/model.safetensors`` in HF GPT-2 format (a model with
    learned positions) or HF LLaMA format (rotary positions)."""
    write_hf(path, *to_hf(model))

"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2021; Raschka, appendix E).

Fine-tuning changes a pretrained weight W (out × in) by some ΔW. Hu et al. observe that the change
a task needs has a low "intrinsic rank", so they train it as a product ΔW = B·A of two thin
matrices, A (r × in) and B (out × r) with r ≪ min(in, out), and leave W frozen:

    h = W·x + (α / r)·B·A·x                                          (Hu et al. 2021, eq. 3)

A starts random (Kaiming-uniform, as ``nn.Linear`` and peft initialise it) and B at zero, so the
adapted model starts out exactly as the pretrained one; α / r keeps the size of the update
comparable when r changes. A rank-8 adapter on a 768 × 2304 projection trains 24,576 numbers
instead of 1.8 M. After training, B·A·α/r is added into W (:func:`merge_lora`) and inference costs
nothing extra; or only A and B are shipped, in peft's format (:func:`save_peft_adapter`).

The token embedding takes an adapter too (:class:`LoRAEmbedding`, the embedding layer of Hu et al.'s
loralib and of peft): a lookup of row i of W is W·onehot(i), so its update is the same product,
read by rows. A classifier fine-tuned from a small GPT needs it: the embeddings carry much of what
the task changes (README, classification).
"""

from __future__ import annotations

import json
import math
from fnmatch import fnmatch
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from llm_lab.atomic import replacing
from llm_lab.errors import ArgumentError
from llm_lab.models.gpt import GPT
from llm_lab.models.hf import GPT2_BLOCK, LLAMA_BLOCK, pairs_to_halves


class LoRAAdapter(nn.Module):
    """What every adapter shares: its frozen ``base`` layer, a rank and the scale α / r of its
    update (Hu et al. 2021, §4.1). Subclasses add ``lora_A`` and ``lora_B`` and say how they apply."""

    def __init__(self, base: nn.Linear | nn.Embedding, rank: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ArgumentError("rank", f"must be a positive integer, got {rank!r}", "e.g. rank=8")
        self.base: nn.Linear | nn.Embedding = base.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


class LoRALinear(LoRAAdapter):
    """A frozen ``base`` linear layer plus a trainable low-rank update ``lora_B @ lora_A``, scaled
    by ``alpha / rank``; dropout acts on the update's input only (peft's ``lora_dropout``)."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__(base, rank, alpha)
        if not 0.0 <= dropout < 1.0:
            raise ArgumentError("dropout", f"{dropout} is outside [0, 1)", "e.g. 0.05, or 0 for none")
        weight = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(rank, base.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device)
        )
        # The init of nn.Linear's weight (and peft's for A): the update starts at B·A = 0 all the same.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # Two thin products (x·Aᵀ then ·Bᵀ): the full out × in matrix B·A is never formed.
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def delta(self) -> Tensor:
        """The update this adapter adds to the base weight: (α / r)·B·A, shaped like it."""
        return (self.lora_B @ self.lora_A) * self.scaling


class LoRAEmbedding(LoRAAdapter):
    """A frozen ``base`` embedding plus a trainable low-rank update of its table, ΔW = (B·A)ᵀ·α/r
    with A (r × num_embeddings) and B (embedding_dim × r), laid out as peft's ``lora_embedding_A``
    and ``lora_embedding_B``. Token i gets row i of ΔW: column i of A (a lookup, no one-hot), times
    Bᵀ. Here A starts at zero and B random (normal(0, 1), nn.Embedding's init), the reverse of the
    linear adapter (loralib and peft do the same): ΔW = 0 at first all the same. There is no
    dropout: the input is a token id, not a vector to thin out (peft's forward applies none either).
    """

    def __init__(self, base: nn.Embedding, rank: int = 8, alpha: float = 16.0) -> None:
        super().__init__(base, rank, alpha)
        weight = base.weight
        self.lora_A = nn.Parameter(
            torch.zeros(rank, base.num_embeddings, dtype=weight.dtype, device=weight.device)
        )
        self.lora_B = nn.Parameter(
            torch.randn(base.embedding_dim, rank, dtype=weight.dtype, device=weight.device)
        )

    def forward(self, idx: Tensor) -> Tensor:
        # Only the looked-up columns of A take part: (…, r) then ·Bᵀ, never the whole table.
        return self.base(idx) + F.embedding(idx, self.lora_A.t()) @ self.lora_B.t() * self.scaling

    def delta(self) -> Tensor:
        """The update this adapter adds to the base table: (α / r)·(B·A)ᵀ, shaped like it."""
        return (self.lora_B @ self.lora_A).t() * self.scaling


LoRALayer = LoRALinear | LoRAEmbedding


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """Every LoRA layer of ``model`` by its name (``blocks.0.attn.qkv``, ``tok_emb``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear | LoRAEmbedding)}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str] = ("qkv", "out_proj"),
) -> int:
    """Wrap every ``nn.Linear`` (in a :class:`LoRALinear`) and ``nn.Embedding`` (in a
    :class:`LoRAEmbedding`) of ``model`` whose name matches one of ``targets``, freeze every other
    parameter, and return how many parameters now train.

    A pattern matches a module's last name (``qkv``, ``out_proj``, ``fc``, ``proj``, ``gate``,
    ``up``, ``lm_head``, ``tok_emb``) or its whole dotted name (``blocks.3.*``), shell-style. A
    pattern that matches no layer is an ArgumentError: an adapter on nothing would train nothing.
    So is an embedding whose table is also another layer's weight (GPT-2's tied output head): the
    adapter changes the lookup only, while merging it into the shared table would change the output
    layer too, so the merged model (every export) would not compute what was trained. Untie the
    head, or adapt the linear layers only."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Embedding) and n}
    layers = {n: m for n, m in layers.items() if ".base" not in f".{n}"}  # already wrapped
    chosen: dict[str, nn.Linear | nn.Embedding] = {}
    for pattern in targets:
        found = {
            n: m for n, m in layers.items() if fnmatch(n, pattern) or fnmatch(n.rsplit(".", 1)[-1], pattern)
        }
        if not found:
            last = sorted({n.rsplit(".", 1)[-1] for n in layers})
            raise ArgumentError(
                "targets", f"no layer is named {pattern!r}", f"the model's are {', '.join(last)}"
            )
        chosen |= found
    for name, layer in chosen.items():
        shared = [n for n, m in layers.items() if n != name and getattr(m, "weight", None) is layer.weight]
        if isinstance(layer, nn.Embedding) and shared:
            raise ArgumentError(
                "targets",
                f"{name} is tied to {shared[0]} (one matrix): a merged adapter would change both",
                f"leave {name} out, or adapt a model with an untied head (tie_embeddings=false)",
            )
    model.requires_grad_(False)
    for name, layer in chosen.items():
        wrapped = (
            LoRAEmbedding(layer, rank, alpha)
            if isinstance(layer, nn.Embedding)
            else LoRALinear(layer, rank, alpha, dropout)
        )
        _replace(model, name, wrapped)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W ← W + (α / r)·B·A) and put the plain linear
    layer back in its place: the same function, no extra cost at inference, the original layout
    (what exports and checkpoints of the merged model expect). Returns ``model``, changed in place."""
    for name, layer in lora_layers(model).items():
        layer.base.weight += layer.delta().to(layer.base.weight.dtype)
        _replace(model, name, layer.base)
    return model


def _hf_modules(model: GPT, name: str) -> list[tuple[str, slice, bool]]:
    """Hugging Face's module(s) for the lab's linear layer ``name`` of a GPT: (name, the rows of our
    output that are its, whether its rows are a Llama q/k head reordering), in the layout of
    :mod:`llm_lab.models.hf` (GPT-2 for learned positions, Llama for rotary ones)."""
    config = model.config
    everything = slice(None)
    if name == "lm_head":
        return [("lm_head", everything, False)]
    if name == "tok_emb":
        embedding = "transformer.wte" if config.positions == "learned" else "model.embed_tokens"
        return [(embedding, everything, False)]
    _, index, local = name.split(".", 2)  # blocks.<i>.<module>
    if config.positions == "learned":
        table = {ours.removesuffix(".weight"): hf.removesuffix(".weight") for hf, ours, _ in GPT2_BLOCK}
        return [(f"transformer.h.{index}.{table[local]}", everything, False)]
    if local == "attn.qkv":  # Llama keeps q, k and v apart: the adapter's B is cut by rows
        q, kv = config.n_head * config.head_dim, config.kv_heads * config.head_dim
        rows = [slice(0, q), slice(q, q + kv), slice(q + kv, q + 2 * kv)]
        return [
            (f"model.layers.{index}.self_attn.{p}_proj", part, p != "v")
            for p, part in zip("qkv", rows, strict=True)
        ]
    table = {ours.removesuffix(".weight"): hf.removesuffix(".weight") for hf, ours in LLAMA_BLOCK}
    return [(f"model.layers.{index}.{table[local]}", everything, False)]


def save_peft_adapter(model: GPT, folder: str | Path, base_model_name_or_path: str) -> Path:
    """Write the adapters of a lab GPT with LoRA as peft does (``adapter_config.json`` and
    ``adapter_model.safetensors``) under Hugging Face's names, so that
    ``PeftModel.from_pretrained(<the exported base model>, folder)`` computes what the lab's model
    does. GPT-2's fused ``c_attn`` takes the ``qkv`` adapter as it is; Llama's q, k, v projections
    share its A and each take their rows of B (q and k reordered as :mod:`llm_lab.models.hf` does);
    the token embedding's adapter goes to ``wte`` / ``embed_tokens`` as peft's ``lora_embedding_A/B``."""
    layers = lora_layers(model)
    if not layers:
        raise ArgumentError("model", "has no LoRA layers", "call add_lora(model, ...) first")
    # An embedding adapter has no dropout: the linear ones' is the file's.
    settings = {
        (layer.rank, layer.alpha, layer.dropout.p if isinstance(layer, LoRALinear) else None)
        for layer in layers.values()
    }
    dropouts = {d for _, _, d in settings if d is not None}
    if len({(r, a) for r, a, _ in settings}) > 1 or len(dropouts) > 1:
        raise ArgumentError("model", "its adapters differ in rank, alpha or dropout", "use one add_lora call")
    [(rank, alpha)] = {(r, a) for r, a, _ in settings}
    dropout = dropouts.pop() if dropouts else 0.0
    config = model.config
    tensors: dict[str, Tensor] = {}
    targets: set[str] = set()
    for name, layer in layers.items():
        for hf, rows, reorder in _hf_modules(model, name):
            if isinstance(layer, LoRAEmbedding):  # peft's names for an embedding's A and B
                tensors[f"base_model.model.{hf}.lora_embedding_A"] = layer.lora_A.detach().clone()
                tensors[f"base_model.model.{hf}.lora_embedding_B"] = layer.lora_B.detach().clone()
                targets.add(hf.rsplit(".", 1)[-1])
                continue
            b = layer.lora_B[rows]
            if reorder:  # q or k rows, in Llama's rotate-half order
                b = pairs_to_halves(b, config.n_head if hf.endswith("q_proj") else config.kv_heads)
            tensors[f"base_model.model.{hf}.lora_A.weight"] = layer.lora_A.detach().clone()  # one copy each
            tensors[f"base_model.model.{hf}.lora_B.weight"] = b.detach().contiguous()
            targets.add(hf.rsplit(".", 1)[-1])
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(targets),
        "fan_in_fan_out": config.positions == "learned",  # GPT-2's Conv1D stores W transposed
        "bias": "none",
        "inference_mode": True,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(folder / "adapter_config.json") as tmp:
        tmp.write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
    with replacing(folder / "adapter_model.safetensors") as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    return folder

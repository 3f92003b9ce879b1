"""A GPT: the GPT-2 architecture, the switches of modern decoders, and generation with a KV cache.

Radford et al. 2019 ("Language Models are Unsupervised Multitask Learners", §2.3) and Raschka,
"Build a Large Language Model", ch. 4-5. The model is a plain ``nn.Module`` mapping token ids
(B, T) to next-token logits (B, T, V); Lightning wraps it in ``llm_lab.lit.lm.NextTokenLM``.

GPT-2 is decoder-only: token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks
(attention then MLP, each inside a residual connection), a final LayerNorm and an output head that
shares its matrix with the token embedding. By config, the choices later decoders made turn it into
a LLaMA (Touvron et al. 2023, §2.2): RMSNorm, SwiGLU, rotary positions, no biases, an untied head,
grouped-query attention.

``kernels`` picks how the pieces are computed: ``fused`` (PyTorch's one-kernel ``F.layer_norm``,
``F.rms_norm``, ``F.gelu``, ``F.silu``, ``F.scaled_dot_product_attention``) or ``written_out`` (the
lab's formulas, op by op, as the papers write them). The parameters are the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm_lab.errors import ArgumentError, type_error
from llm_lab.models.sampling import sample_next
from llm_lab.nn.attention import KVCache, causal_mask
from llm_lab.nn.feedforward import MLPS, make_mlp
from llm_lab.nn.normalization import NORMS, make_norm
from llm_lab.nn.positions import LearnedPositionalEmbedding, RotaryEmbedding
from llm_lab.nn.weight_decay import weight_decay_groups

POSITIONS = ("learned", "rope")
KERNELS = ("fused", "written_out")

# GPT-2's four published sizes (Radford et al. 2019, Table 2; "124M" is the corrected count of the
# smallest) and lab sizes small enough to train on a laptop CPU in minutes.
NAMED_SIZES: dict[str, dict[str, int]] = {
    "lab-tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64},
    "lab-small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": 128},
    "lab-medium": {"n_layer": 6, "n_head": 6, "n_embd": 384, "context_length": 256},
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "context_length": 1024},
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "context_length": 1024},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "context_length": 1024},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "context_length": 1024},
}


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT; the defaults are GPT-2 124M (Radford et al. 2019)."""

    vocab_size: int = 50257
    context_length: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None  # key/value heads (GQA, Ainslie et al. 2023); None: n_head
    d_ff: int | None = None  # MLP hidden size; None: 4·n_embd (gelu) or ≈ 8/3·n_embd (swiglu)
    dropout: float = 0.0  # GPT-2 trained with 0.1 on embeddings, attention weights and residuals
    norm: str = "layernorm"  # or "rmsnorm" (Zhang & Sennrich 2019)
    norm_eps: float = 1e-5  # added to the variance (or mean square) before the square root
    mlp: str = "gelu"  # or "swiglu" (Shazeer 2020)
    positions: str = "learned"  # or "rope" (Su et al. 2021): rotates q, k instead of adding vectors
    rope_theta: float = 10000.0  # RoPE's base: feature pair i turns by position·θ^(-2i/head_dim)
    qkv_bias: bool = True  # biases on the q, k, v projections (GPT-2: yes; LLaMA: no)
    attn_out_bias: bool = True  # bias on the attention's output projection
    mlp_bias: bool = True  # biases on the MLP's linear layers
    tie_embeddings: bool = True  # the output head reuses the token embedding matrix
    kernels: str = "fused"  # "fused" (PyTorch's kernels) or "written_out" (the lab's formulas)

    @classmethod
    def from_name(cls, size: str, **overrides: Any) -> GPTConfig:
        """The config of a named size (see ``NAMED_SIZES``), with some fields overridden."""
        if size not in NAMED_SIZES:
            raise ArgumentError("size", f"unknown size {size!r}", f"use one of {', '.join(NAMED_SIZES)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ArgumentError(
                unknown[0],
                "is not a GPT setting",
                f"valid settings: {', '.join(sorted(known))}",
            )
        return cls(**{**NAMED_SIZES[size], **overrides})

    def __post_init__(self) -> None:
        # Fail here, naming the setting to change, before any layer is built.
        for field in fields(self):
            wrong = type_error(field.name, getattr(self, field.name), field.type)
            if wrong is not None:
                raise wrong
        for key in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd", "n_kv_head", "d_ff"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ArgumentError(key, f"must be positive, got {value}", "use 1 or more")
        for key in ("norm_eps", "rope_theta"):
            if not getattr(self, key) > 0:
                example = {"norm_eps": "1e-5", "rope_theta": "10000"}[key]
                raise ArgumentError(key, f"must be positive, got {getattr(self, key)}", f"e.g. {example}")
        if self.n_embd % self.n_head != 0:
            raise ArgumentError(
                "n_head",
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}",
                "pick n_head dividing n_embd",
            )
        if self.n_head % self.kv_heads != 0:
            raise ArgumentError(
                "n_kv_head",
                f"n_head={self.n_head} is not divisible by n_kv_head={self.kv_heads}",
                "pick n_kv_head dividing n_head (n_head itself is ordinary multi-head attention)",
            )
        if self.positions == "rope" and self.head_dim % 2 != 0:
            raise ArgumentError(
                "n_head",
                f"RoPE rotates pairs of features, but head_dim = n_embd / n_head = {self.head_dim} is odd",
                "pick n_head so that n_embd / n_head is even",
            )
        choices = (("norm", NORMS), ("mlp", MLPS), ("positions", POSITIONS), ("kernels", KERNELS))
        for key, valid in choices:
            if getattr(self, key) not in valid:
                raise ArgumentError(
                    key,
                    f"unknown value {getattr(self, key)!r}",
                    f"use one of {', '.join(valid)}",
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ArgumentError(
                "dropout", f"dropout={self.dropout} is outside [0, 1)", "e.g. 0.1, or 0 for none"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads (``n_kv_head``, or ``n_head`` when it is None)."""
        return self.n_kv_head or self.n_head


class Attention(nn.Module):
    """Causal multi-head self-attention with grouped queries (Vaswani et al. 2017, §3.2; Raschka
    ch. 3.6; Ainslie et al. 2023, GQA), with rotary positions and a KV cache for generation.

    Parameters: ``qkv`` (n_embd → (n_head + 2·n_kv_head)·head_dim, rows ordered [q | k | v], each
    cut into contiguous heads: GPT-2's ``c_attn`` layout) and ``out_proj`` (W^O). With
    ``n_kv_head < n_head`` each key/value head serves a group of n_head / n_kv_head query heads,
    which shrinks the KV cache by that factor.

    ``keep_weights`` (set by ``llm_lab.nn.attention.attention_weights``) runs the written-out path
    and keeps the (B, n_head, T_q, T_k) weights in ``weights``, for heatmaps.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.qkv = nn.Linear(
            config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.qkv_bias
        )
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.attn_out_bias)
        self.dropout = config.dropout
        self.fused = config.kernels == "fused"
        self.keep_weights = False
        self.weights: Tensor | None = None

    def forward(
        self, x: Tensor, rope: RotaryEmbedding | None = None, kv_cache: KVCache | None = None
    ) -> Tensor:
        """(B, T, n_embd) → (B, T, n_embd).

        With ``kv_cache`` the T inputs are the tokens after the cached ones: their keys/values are
        appended and their queries attend to everything cached so far. ``rope`` rotates q and k by
        their absolute positions, offset by the cache length, before k is cached.
        """
        batch, length, n_embd = x.shape
        q_width, kv_width = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.qkv(x).split([q_width, kv_width, kv_width], dim=-1)
        # Each head attends in its own head_dim-wide subspace: (B, T, heads·hd) → (B, heads, T, hd).
        q = q.view(batch, length, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        offset = kv_cache.length if kv_cache is not None else 0
        if rope is not None:
            q, k = rope(q, k, offset=offset)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # every key/value so far: (B, n_kv_head, offset + T, hd)
        dropout_p = self.dropout if self.training else 0.0
        # Which keys each query may see. The queries are the last T of the keys' positions: without
        # a cache they are the same positions (the kernels' own causal mask); one new token after a
        # cache sees every key (no mask); a chunk after a cache needs the mask shifted by the cache
        # (is_causal would align it top-left).
        is_causal = offset == 0
        mask = causal_mask(length, k.shape[-2], x.device) if offset and length > 1 else None
        if self.fused and not self.keep_weights:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                enable_gqa=self.n_kv_head != self.n_head,
            )
        else:
            # Written out: softmax(q kᵀ / √d) v (Vaswani et al. 2017, eq. 1), each group of query
            # heads reading its shared key/value head.
            group = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, T_k)
            if is_causal:
                mask = causal_mask(length, length, x.device)
            if mask is not None:  # -inf becomes exactly 0 after the softmax: no weight at all
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            if self.keep_weights:
                self.weights = weights.detach()
            y = F.dropout(weights, dropout_p) @ v
        # The heads side by side again, then mixed by W^O (Vaswani et al. 2017, §3.2.2).
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, n_embd))


class Block(nn.Module):
    """One pre-LN Transformer block (Radford et al. 2019, §2.3; Raschka ch. 4.5).

    GPT-2 moved LayerNorm to the *input* of each sub-block (Xiong et al. 2020 show why this keeps
    gradients well-scaled without warm-up tricks); the residual stream itself is never normalised.
    Dropout on each sub-block's output is the residual dropout of Vaswani et al. 2017, §5.4; the
    attention applies its own dropout to the attention weights.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        fused = config.kernels == "fused"
        self.ln_1 = make_norm(config.norm, config.n_embd, config.norm_eps, fused)
        self.attn = Attention(config)
        self.ln_2 = make_norm(config.norm, config.n_embd, config.norm_eps, fused)
        self.mlp = make_mlp(config.mlp, config.n_embd, config.d_ff, config.mlp_bias, fused)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, rope: RotaryEmbedding | None = None, kv_cache: KVCache | None = None
    ) -> Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), rope=rope, kv_cache=kv_cache))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """GPT-2 (Radford et al. 2019) and its modern variants: ids (B, T) → logits (B, T, vocab_size).

    Parameter names follow Hugging Face's GPT-2 closely (``ln_1``, ``attn.qkv`` ≈ ``attn.c_attn``,
    ``mlp.fc`` ≈ ``mlp.c_fc``, ``ln_f``) so that :mod:`llm_lab.models.hf` is a short table.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        # With RoPE the positions enter inside attention, so there is no additive table.
        self.pos_emb = (
            LearnedPositionalEmbedding(config.context_length, config.n_embd)
            if config.positions == "learned"
            else None
        )
        self.rope = (
            RotaryEmbedding(config.head_dim, config.context_length, config.rope_theta)
            if config.positions == "rope"
            else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config.norm, config.n_embd, config.norm_eps, config.kernels == "fused")
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight tying (Press & Wolf 2017): the head scores a hidden state against every
            # token's input embedding; GPT-2 does this, and it saves vocab_size·n_embd parameters.
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2 §2.3: scale the weights of residual-path projections by 1/sqrt(N), N = 2·n_layer
        # residual additions, so the residual stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith(("attn.out_proj.weight", "mlp.proj.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation: N(0, 0.02) for matrices and embeddings, zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, LearnedPositionalEmbedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @staticmethod
    def check_arguments(size: str = "lab-tiny", compile: bool = False, **overrides: Any) -> None:
        """What :meth:`from_size` refuses (an unknown size, a head count that does not divide the
        width...), checked on the settings alone: no weights are made."""
        GPTConfig.from_name(size, **{key: value for key, value in overrides.items() if value is not None})

    @classmethod
    def from_size(cls, size: str = "lab-tiny", compile: bool = False, **overrides: Any) -> GPT:
        """Build a named size; ``None`` overrides keep the size's value (Hydra's ``null``).

        This is the Hydra target of ``conf/model/gpt*.yaml`` and ``llama.yaml``: ``NextTokenLM``
        calls it with the tokenizer's ``vocab_size``. ``compile=True`` compiles ``forward`` in place
        with ``torch.compile`` (parameter names, hence checkpoints, stay those of the plain model).
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        model = cls(GPTConfig.from_name(size, **given))
        if compile:
            model.compile()
        return model

    def forward(self, idx: Tensor, kv_cache: list[KVCache] | None = None) -> Tensor:
        """Logits (B, T, V) for ids (B, T); with ``kv_cache`` the ids follow the cached ones."""
        return self.lm_head(self.hidden_states(idx, kv_cache))

    def hidden_states(self, idx: Tensor, kv_cache: list[KVCache] | None = None) -> Tensor:
        """The final normalised hidden states (B, T, n_embd): what a head reads (the LM head, or a
        classifier's, :mod:`llm_lab.models.classifier`)."""
        offset = kv_cache[0].length if kv_cache is not None else 0
        t = idx.shape[1]
        if offset + t > self.config.context_length:
            raise ArgumentError(
                "context_length",
                f"{offset + t} tokens exceed context_length={self.config.context_length}",
                "feed sequences no longer than the model's context_length",
            )
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(t, offset)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope=self.rope, kv_cache=kv_cache[i] if kv_cache is not None else None)
        return self.ln_f(x)

    def check_vocab(self, vocab_size: int) -> None:
        """Raise an ArgumentError unless a tokenizer of ``vocab_size`` ids fits the model: a larger
        one gives ids the embedding has no row for, a smaller one cannot decode ids the model
        generates (a sign it is another tokenizer altogether)."""
        if vocab_size != self.config.vocab_size:
            raise ArgumentError(
                "vocab_size",
                f"the tokenizer has {vocab_size} tokens, the model {self.config.vocab_size}",
                "use the tokenizer the model was trained with",
            )

    @torch.no_grad()
    def resize_vocab(self, vocab_size: int) -> None:
        """Grow the token embedding (and an untied head) to ``vocab_size`` rows, for the special
        tokens a chat template adds (``llm_lab.tokenizers.special``).

        Each new row is the mean of the trained rows (Hewitt 2021, "Initializing new word
        embeddings for pretrained language models"): a random row could have a large dot product
        with the final hidden state and make the model emit the new token everywhere; the mean
        keeps the new token's logit near the average one until fine-tuning teaches it."""
        old = self.config.vocab_size
        if vocab_size < old:
            raise ArgumentError("vocab_size", f"cannot shrink {old} rows to {vocab_size}", "only grow it")
        if vocab_size == old:
            return
        weight = self.tok_emb.weight
        grown = torch.cat([weight, weight.mean(0, keepdim=True).expand(vocab_size - old, -1)])
        self.tok_emb = nn.Embedding(vocab_size, self.config.n_embd, device=weight.device, dtype=weight.dtype)
        self.tok_emb.weight.copy_(grown)
        head = self.lm_head.weight
        self.lm_head = nn.Linear(
            self.config.n_embd, vocab_size, bias=False, device=head.device, dtype=head.dtype
        )
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        else:
            self.lm_head.weight.copy_(
                torch.cat([head, head.mean(0, keepdim=True).expand(vocab_size - old, -1)])
            )
        self.config = replace(self.config, vocab_size=vocab_size)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decay the linear layers' matrices, not biases, norm gains or embeddings."""
        return weight_decay_groups(self, weight_decay)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (a tied matrix counts once).

        ``non_embedding`` leaves out the tables that are only looked up, never multiplied: the
        position table and, when the head is untied, the token embedding (a tied one is the head).
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.tok_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N + 12·L·H·Q·T (Chowdhery et al. 2022, PaLM, appendix B).

        6N counts the matrix multiplies of forward (2N) and backward (4N) with N the non-embedding
        parameters; the second term is the attention scores and weighted sums, which have no
        parameters: every one of the H query heads scores T keys, however few key/value heads
        there are (GQA saves parameters and cache, not these FLOPs).
        """
        cfg = self.config
        t = seq_len or cfg.context_length
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * t

    def generation_bytes(self, length: int) -> int:
        """About the memory one row of :meth:`stream` needs for ``length`` tokens: every layer's
        cached keys and values, and the logits of a forward over (up to) a context's positions."""
        cfg = self.config
        itemsize = next(self.parameters()).element_size()
        cached = min(length, cfg.context_length) * 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim
        logits = min(length, cfg.context_length) * cfg.vocab_size
        return (cached + logits + length) * itemsize

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, **sampling: Any) -> Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to ``idx`` (B, T); return (B, T + n): the
        tokens of :meth:`stream`, all at once. ``sampling`` takes its settings (``temperature``,
        ``top_k``, ``top_p``, ``eos_id``, ``use_cache``, ``generator``)."""
        steps = self.stream(idx, max_new_tokens, **sampling)
        return torch.cat([idx, *(next_id[:, None] for next_id in steps)], dim=1)

    @torch.no_grad()
    def stream(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        kv_cache: list[KVCache] | None = None,
    ) -> Iterator[Tensor]:
        """Sample up to ``max_new_tokens`` tokens after ``idx`` (B, T), yielding each step's (B,)
        new ids as it is made (what a caller shows progress or streams text from).

        ``temperature=0`` is greedy decoding. Each step samples from the last position's
        distribution (Raschka ch. 5.3), optionally cut to the ``top_k`` most likely tokens and/or the
        smallest set holding ``top_p`` of the probability (nucleus sampling, Holtzman et al. 2020).
        Pass a seeded ``generator`` for reproducible samples.

        With ``eos_id``, a row that has produced it keeps receiving ``eos_id`` (so rows stay
        aligned) and generation stops early once every row has finished.

        With ``use_cache`` the prompt is encoded once and each step feeds only the newest token,
        reusing every layer's cached keys and values; the tokens are the same as without the cache.
        Once the sequence would exceed ``context_length`` the cache is dropped and, like the
        uncached path always does, each step re-encodes the last ``context_length`` tokens (with
        learned positions a sliding cache would shift every position, so it cannot be reused).
        A ``kv_cache`` passed in holds the keys and values of the first tokens of ``idx`` already (a
        chat's earlier turns): only the rest is encoded, and the cache keeps growing in place.
        """
        if idx.dim() != 2 or idx.shape[1] == 0:
            raise ArgumentError(
                "idx",
                f"generate needs ids of shape (B, T) with T ≥ 1, got {tuple(idx.shape)}",
                "give a batch of at least one prompt token",
            )
        ctx = self.config.context_length
        was_training = self.training
        self.eval()
        caches = kv_cache if kv_cache is not None else [KVCache() for _ in self.blocks] if use_cache else None
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        try:
            for _ in range(max_new_tokens):
                if caches is not None and idx.shape[1] > ctx:
                    caches = None
                if caches is None:
                    logits = self(idx[:, -ctx:])
                else:  # first step: the whole prompt; later: only the token the cache has not seen
                    logits = self(idx[:, caches[0].length :], kv_cache=caches)
                next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
                if eos_id is not None:
                    next_id = torch.where(finished, torch.full_like(next_id, eos_id), next_id)
                    finished |= next_id == eos_id
                idx = torch.cat([idx, next_id[:, None]], dim=1)
                yield next_id
                if eos_id is not None and bool(finished.all()):
                    break
        finally:  # also when the caller stops reading early
            self.train(was_training)

"""The smallest model that shows attention at work: embed, add positions, attend once, predict.

Raschka, "Build a Large Language Model", ch. 2.8 (token + position embeddings) and ch. 3 (the
attention variants). One attention layer of the chosen variant sits inside a residual connection
(Vaswani et al. 2017, §3.1), so each position keeps its own token while mixing in the others; a
LayerNorm and a linear head turn the result into logits over the vocabulary.

The variants that see the whole window (``simple``, ``self``, non-causal ``multihead``) are
trained to fill in a masked token (``llm_lab.lit.masked_lm``); the causal ones are next-token
language models (``llm_lab.lit.lm.NextTokenLM``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.attention import (
    CausalSelfAttention,
    MultiHeadAttention,
    SelfAttention,
    SimplifiedSelfAttention,
)
from llm_lab.nn.positions import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding

log = logging.getLogger(__name__)

ATTENTIONS = ("simple", "self", "causal", "multihead")
POSITIONS = ("none", "learned", "sinusoidal")


def _check_choice(arg: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ArgumentError(arg, f"unknown value {value!r}", f"use one of {', '.join(valid)}")


def make_attention(
    kind: str, d_model: int, context_length: int, num_heads: int, dropout: float, causal: bool, backend: str
) -> nn.Module:
    """One attention layer of the named variant, mapping (B, T, d_model) → (B, T, d_model)."""
    _check_choice("attention", kind, ATTENTIONS)
    if kind == "simple":
        return SimplifiedSelfAttention()
    if kind == "self":
        return SelfAttention(
            d_model, d_model, context_length=context_length, dropout=dropout, backend=backend
        )
    if kind == "causal":
        return CausalSelfAttention(d_model, d_model, context_length, dropout, backend=backend)
    return MultiHeadAttention(
        d_model, d_model, context_length, num_heads, dropout, causal=causal, backend=backend
    )


def make_positions(kind: str, context_length: int, d_model: int) -> nn.Module | None:
    """The additive position embedding of the named kind (None for ``none``)."""
    _check_choice("positions", kind, POSITIONS)
    if kind == "learned":
        return LearnedPositionalEmbedding(context_length, d_model)
    if kind == "sinusoidal":
        return SinusoidalPositionalEmbedding(context_length, d_model)
    return None


class AttentionLM(nn.Module):
    """ids (B, T) → logits (B, T, vocab_size) through one attention layer.

    Args:
        vocab_size: number of token ids (given by the data).
        d_model: width of embeddings and attention.
        context_length: longest window; sizes the position table and the attention checks.
        attention: ``simple`` (3.3, no weights), ``self`` (3.4), ``causal`` (3.5) or
            ``multihead`` (3.6, fused heads).
        num_heads: heads of ``multihead``.
        causal: whether ``multihead`` masks the future (``simple``/``self`` never do, ``causal``
            always does).
        positions: ``none``, ``learned`` (ch. 2.8) or ``sinusoidal`` (Vaswani §3.5).
        dropout: on the embeddings and on the attention weights.
        backend: ``sdpa`` or ``naive`` attention kernel.
        embeddings: optional word2vec text file (a CBoW run's ``vectors.txt``) to initialise the
            token embeddings from; needs the ``tokenizer`` to know which word each id is.
        freeze_embeddings: keep those initial embeddings fixed.
        tokenizer: the data's tokenizer (``encode``/``decode``/``vocab_size``); only read to
            match ``embeddings`` to ids.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        context_length: int = 32,
        attention: str = "multihead",
        num_heads: int = 4,
        causal: bool = True,
        positions: str = "learned",
        dropout: float = 0.0,
        backend: str = "sdpa",
        embeddings: str | Path | None = None,
        freeze_embeddings: bool = False,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if d_model <= 0:
            raise ArgumentError("d_model", f"d_model={d_model} must be positive", "use a positive size")
        self.context_length = context_length
        self.causal = attention == "causal" or (attention == "multihead" and causal)
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = make_positions(positions, context_length, d_model)
        self.drop = nn.Dropout(dropout)
        self.attn = make_attention(
            attention, d_model, context_length, num_heads, dropout, self.causal, backend
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        if embeddings is not None:
            if tokenizer is None:
                raise ArgumentError(
                    "embeddings",
                    "initial embeddings need the tokenizer to match words to ids",
                    "pass the tokenizer (the masked-token objective does)",
                )
            vocab = [tokenizer.decode([i]).strip() for i in range(tokenizer.vocab_size)]
            copied = self.load_embeddings(embeddings, vocab)
            # Words the vectors lack keep a random start: say how many, since few means the vectors
            # come from another corpus or tokenization and the comparison with random init is moot.
            log.info("embeddings: %d of %d token rows start from %s", copied, vocab_size, embeddings)
        self.tok_emb.weight.requires_grad_(not freeze_embeddings)

    def load_embeddings(self, path: str | Path, vocab: Sequence[str]) -> int:
        """Copy word2vec vectors into the rows of the words they name (``vocab[i]`` is id i);
        other rows keep their initialisation. Returns how many rows were copied.

        The CBoW vectors carry what the corpus taught about each word (Mikolov et al. 2013a); a
        model starting from them need not learn word similarity from scratch.
        """
        from llm_lab.models.cbow import load_word2vec_text

        words, vectors = load_word2vec_text(path)
        dim = self.tok_emb.embedding_dim
        if vectors.shape[1] != dim:
            raise ArgumentError(
                "embeddings",
                f"{path} holds {vectors.shape[1]}-dimensional vectors but d_model={dim}",
                f"use d_model={vectors.shape[1]}",
            )
        row = {word: i for i, word in enumerate(words)}
        # CBoW runs lower-case their words by default; fall back to the lower-case entry.
        found = [(i, row.get(w, row.get(w.lower()))) for i, w in enumerate(vocab)]
        found = [(i, r) for i, r in found if r is not None]
        if not found:
            raise ArgumentError(
                "embeddings",
                f"no word of the vocabulary is in {path}",
                "use vectors trained on the same corpus and tokenization",
            )
        ids, rows = (torch.tensor(col) for col in zip(*found, strict=True))
        with torch.no_grad():
            self.tok_emb.weight[ids] = torch.as_tensor(vectors, dtype=torch.float32)[rows]
        return len(found)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T)."""
        x = self.tok_emb(ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(ids.shape[1])
        x = self.drop(x)
        x = x + self.attn(x)
        return self.head(self.norm(x))

"""A GPT turned text classifier: the language-model head replaced by a class head (Raschka ch. 6.5).

A decoder reads left to right, so only its last position has seen the whole text: the classifier
scores the hidden state of the last real token (``pooling="last"``, as ch. 6 and Hugging Face's
``GPT2ForSequenceClassification`` do), or the mean over the real tokens (``mean``), or the first
token (``first``, which has seen nothing but itself: the lesson's bad example). Texts of a batch
are padded on the right to its longest; under causal attention the padding never reaches a real
token, and ``lengths`` says where each text ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError
from llm_lab.models.gpt import GPT, GPTConfig

POOLINGS = ("last", "mean", "first")


@dataclass(frozen=True)
class ClassifierConfig(GPTConfig):
    """A GPT's settings, and the classifier's: how many classes, how the positions are pooled.
    There is no language-model head (``tie_embeddings`` keeps GPT from making an untied one)."""

    n_classes: int = 2
    pooling: str = "last"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_classes < 2:
            raise ArgumentError(
                "n_classes", f"{self.n_classes} < 2", "a classifier needs two classes or more"
            )
        if self.pooling not in POOLINGS:
            raise ArgumentError(
                "pooling", f"unknown value {self.pooling!r}", f"use one of {', '.join(POOLINGS)}"
            )


class GPTClassifier(GPT):
    """ids (B, T) and their ``lengths`` (B,) → class logits (B, n_classes): a GPT's hidden states,
    pooled, scored by ``score`` (n_embd → n_classes, no bias: Hugging Face's ``score``)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        del self.lm_head  # tied to the embedding (tie_embeddings): no parameter goes with it
        self.score = nn.Linear(config.n_embd, config.n_classes, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=0.02)

    @classmethod
    def from_gpt(
        cls, gpt: GPT, n_classes: int, pooling: str = "last", dropout: float | None = None
    ) -> GPTClassifier:
        """A classifier with ``gpt``'s body (its weights copied) and a new, random class head;
        ``dropout`` replaces the body's (fine-tuning a small set overfits without it)."""
        settings = {**asdict(gpt.config), "tie_embeddings": True}
        if dropout is not None:
            settings["dropout"] = dropout
        model = cls(ClassifierConfig(**settings, n_classes=n_classes, pooling=pooling))
        body = {k: v for k, v in gpt.state_dict().items() if not k.startswith(("lm_head.", "score."))}
        missing, unexpected = model.load_state_dict(body, strict=False)
        assert missing == ["score.weight"] and not unexpected, (missing, unexpected)
        return model.to(next(gpt.parameters()).device)

    def forward(self, idx: Tensor, lengths: Tensor | None = None) -> Tensor:  # type: ignore[override]
        hidden = self.hidden_states(idx)  # (B, T, n_embd)
        if lengths is None:
            lengths = torch.full(idx.shape[:1], idx.shape[1], device=idx.device)
        pooling = self.config.pooling  # type: ignore[attr-defined]
        if pooling == "last":
            pooled = hidden[torch.arange(idx.shape[0], device=idx.device), lengths - 1]
        elif pooling == "first":
            pooled = hidden[:, 0]
        else:  # the mean over each text's real tokens
            real = torch.arange(idx.shape[1], device=idx.device)[None, :] < lengths[:, None]
            pooled = (hidden * real[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)
        return self.score(pooled)

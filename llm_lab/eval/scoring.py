"""Log-likelihoods of continuations, the one measurement every evaluation task is made of.

A causal language model gives log p(token | tokens before it); evaluation sums these over the
tokens of some text after some context (Brown et al. 2020, §2.4; the lm-evaluation-harness's
``loglikelihood`` request, whose conventions are followed here so that scores agree with it):

- a (context, continuation) pair is encoded as the *whole* text and cut where the context's own
  encoding ends, so the continuation's first token is the one the tokenizer really makes at the
  boundary; spaces that end the context move to the continuation (``" Paris"`` is one GPT-2 token);
- an empty context is the ``<|endoftext|>`` token, which stands for "a document starts here";
- a pair longer than the model's window keeps its last ``context_length + 1`` tokens: the context
  is cut from the left, and the continuation must fit whole.

Requests are scored in batches (one forward pass holds several continuations, right-padded: a
causal model's positions never see the padding after them), longest first so that a batch's rows
have similar lengths.

The model behind a :class:`Scorer` is anything with ``context_length`` and ``logits(ids)``
(:class:`LanguageModel`): :class:`LabLM` wraps the lab's GPT, :class:`HFCausalLM` a Hugging Face
causal LM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from llm_lab.errors import ArgumentError
from llm_lab.models.gpt import GPT
from llm_lab.tokenizers.base import Tokenizer

ENDOFTEXT = "<|endoftext|>"


class LanguageModel(Protocol):
    """What evaluation needs of a model: its window and next-token logits (B, T) → (B, T, V)."""

    @property
    def context_length(self) -> int: ...

    def logits(self, ids: Tensor) -> Tensor: ...


class LabLM:
    """The lab's :class:`~llm_lab.models.gpt.GPT` as a :class:`LanguageModel`."""

    def __init__(self, net: GPT) -> None:
        self.net = net.eval()

    @property
    def context_length(self) -> int:
        return self.net.config.context_length

    def logits(self, ids: Tensor) -> Tensor:
        return self.net(ids)


class HFCausalLM:
    """A Hugging Face causal LM (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...) as a
    :class:`LanguageModel`; its window is ``n_positions`` or ``max_position_embeddings``."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        config = model.config
        window = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if not isinstance(window, int):
            raise ArgumentError("model", "its config names no window length", "give a GPT-2 or Llama model")
        self._context_length = window

    @property
    def context_length(self) -> int:
        return self._context_length

    def logits(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids).logits


Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


@dataclass(frozen=True)
class LogLikelihood:
    """A continuation's summed log-probability (nats), its token count, and whether greedy
    decoding (the most likely token at every step) would have produced it exactly."""

    value: float
    tokens: int
    is_greedy: bool


class Scorer:
    """Scores text under a :class:`LanguageModel` read through ``tokenizer``.

    ``batch_size`` rows go through the model at once; ``progress``, if given, is called with the
    number of requests each batch finished (what a progress bar counts). ``start_token`` stands
    before a document's first token: ``<|endoftext|>`` for GPT-2 and the lab's tokenizers, a Llama
    tokenizer's ``<s>`` (the harness uses the beginning-of-sequence token when there is one).
    """

    def __init__(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        progress: Callable[[int], None] | None = None,
        start_token: str = ENDOFTEXT,
    ) -> None:
        if batch_size < 1:
            raise ArgumentError("batch_size", f"{batch_size} < 1", "use 1 or more")
        eot = tokenizer.token_to_id(start_token)
        if eot is None:
            raise ArgumentError(
                "tokenizer",
                f"has no {start_token} token, which stands before a document's first token",
                f"use a tokenizer with {ENDOFTEXT} (every tokenizer the lab trains has it)",
            )
        self.model, self.tokenizer, self.eot_id = model, tokenizer, eot
        self.batch_size, self.device, self.progress = batch_size, torch.device(device), progress

    @property
    def context_length(self) -> int:
        return self.model.context_length

    def encode_pair(self, context: str, continuation: str) -> Pair:
        """The ids of ``continuation`` after ``context``, split where the context's encoding ends
        (the harness's ``_encode_pair``); an empty context is ``<|endoftext|>``."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.eot_id], self.tokenizer.encode(continuation)
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context)
        return context_ids, whole[len(context_ids) :]

    def loglikelihoods(self, pairs: Sequence[Pair]) -> list[LogLikelihood]:
        """log p(continuation | context) for each (context ids, continuation ids) pair, in order.

        A continuation longer than the window, or empty, is an ArgumentError naming ``pairs``.
        """
        window = self.context_length
        for i, (context, continuation) in enumerate(pairs):
            if not continuation or not context:
                raise ArgumentError("pairs", f"pair {i} has an empty context or continuation", "give both")
            if len(continuation) > window:
                raise ArgumentError(
                    "pairs",
                    f"pair {i}: a continuation of {len(continuation)} tokens does not fit the model's "
                    f"window of {window}",
                    "shorten it, or use a model with a longer context_length",
                )
        # Longest first: rows of a batch have similar lengths, so little of it is padding.
        order = sorted(range(len(pairs)), key=lambda i: -min(len(pairs[i][0]) + len(pairs[i][1]), window + 1))
        results: list[LogLikelihood | None] = [None] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, result in zip(batch, self._batch([pairs[i] for i in batch]), strict=True):
                results[i] = result
            if self.progress is not None:
                self.progress(len(batch))
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _batch(self, pairs: list[Pair]) -> list[LogLikelihood]:
        """One forward pass over right-padded rows; each row's continuation is read from its end."""
        rows = [
            (context + continuation)[-(self.context_length + 1) :][:-1] for context, continuation in pairs
        ]
        width = max(len(row) for row in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        logprobs = torch.log_softmax(self.model.logits(ids.to(self.device)).float(), dim=-1)
        out = []
        for r, (row, (_, continuation)) in enumerate(zip(rows, pairs, strict=True)):
            # The logits at position t predict token t + 1: the continuation's n tokens are
            # predicted by the row's last n positions.
            n = len(continuation)
            scores = logprobs[r, len(row) - n : len(row)]
            target = torch.tensor(continuation, device=scores.device)
            value = scores.gather(1, target[:, None]).sum().item()
            greedy = bool((scores.argmax(dim=-1) == target).all())
            out.append(LogLikelihood(value, n, greedy))
        return out

    def rolling_windows(self, ids: list[int], stride: int | None = None) -> list[Pair]:
        """The (context, continuation) pairs that score every token of a document exactly once.

        The document is read after ``<|endoftext|>`` (its first token is predicted from it). The
        first window scores the first ``context_length`` tokens; each later window moves ``stride``
        tokens on (``context_length`` when None: the harness's disjoint windows) and scores only
        the tokens it adds, seeing the ``context_length - stride`` tokens before them as context.
        A smaller stride gives each token more context and costs more forward passes
        (HF's "perplexity of fixed-length models" guide).
        """
        window = self.context_length
        stride = window if stride is None else stride
        if not 1 <= stride <= window:
            raise ArgumentError(
                "stride", f"{stride} is not in [1, context_length={window}]", "e.g. the window"
            )
        stream = [self.eot_id, *ids]  # stream[k + 1] is ids[k]
        pairs: list[Pair] = []
        end = 0  # tokens of ids scored so far
        while end < len(ids):
            new_end = min(end + (window if end == 0 else stride), len(ids))
            pairs.append((stream[max(0, new_end - window) : end + 1], stream[end + 1 : new_end + 1]))
            end = new_end
        return pairs

"""The starting model's own answers to prompts: on-policy rejected responses for DPO.

Rafailov et al. (2023, §6) sample the responses they rank from the SFT model itself, and the
online and self-rewarding recipes since (e.g. Pang et al. 2024, "Iterative Reasoning Preference
Optimization") pair the right answer with the model's own: the preference then says what the
model does wrong, not what another text says. Each prompt is rendered by the chat template up to
the assistant's header (as the chat does, ``llm_lab.models.chat``), and the model samples an
answer with its KV cache until its end-of-turn token or ``max_tokens`` of that prompt. Prompts of
the same token length go through together (no padding: a batch of equal-length prompts needs no
attention mask), in a fixed order with one seeded generator, so the answers repeat run after run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from llm_lab.data.templates import JinjaTemplate, Message, Template
from llm_lab.models.chat import encode_segments
from llm_lab.models.gpt import GPT
from llm_lab.tokenizers.base import Tokenizer


def own_answers(
    net: GPT,
    tokenizer: Tokenizer,
    template: Template | JinjaTemplate,
    prompts: Sequence[Sequence[Message]],
    max_tokens: Sequence[int],
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
) -> list[str]:
    """``net``'s answer to each conversation of ``prompts`` (ending with the user's turn), as text:
    at most ``max_tokens[i]`` tokens for prompt ``i`` (and never past the model's context), drawn at
    ``temperature`` (0: greedy) with a generator seeded by ``seed``."""
    end_of_turn = tokenizer.token_to_id(template.end_of_turn)
    encoded = [encode_segments(template, tokenizer, list(p), add_generation_prompt=True) for p in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    device = next(net.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    context = net.config.context_length
    answers = [""] * len(prompts)
    for length, rows in sorted(by_length.items()):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            limits = [max(0, min(max_tokens[i], context - length)) for i in chunk]
            if max(limits) == 0:
                continue  # the context holds no answer: an empty one (the pair's encoder decides)
            idx = torch.tensor([encoded[i] for i in chunk], device=device)
            new = net.generate(
                idx, max(limits), temperature=temperature, eos_id=end_of_turn, generator=generator
            )[:, length:]
            for i, row, limit in zip(chunk, new.tolist(), limits, strict=True):
                if end_of_turn in row:
                    row = row[: row.index(end_of_turn)]
                answers[i] = tokenizer.decode(row[:limit])
    return answers

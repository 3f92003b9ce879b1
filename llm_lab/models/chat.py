"""Talking to an instruction-tuned GPT: turns rendered by its template, answers streamed token by
token, the KV cache kept from one turn to the next.

A chat is one growing sequence of ids: each turn appends the user's message and the assistant's
header (:meth:`Template.segments` of the new messages, each segment encoded on its own as in
training, ``llm_lab.data.instruct``), and the model continues it until the template's end-of-turn
token. The keys and values of everything already read stay in the cache
(:class:`llm_lab.nn.attention.KVCache`), so a turn costs only its own new tokens — until the
conversation outgrows the model's context, when the oldest tokens are dropped and the rest encoded
again (learned positions cannot slide a cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from llm_lab.data.templates import JinjaTemplate, Message, Template
from llm_lab.models.gpt import GPT
from llm_lab.nn.attention import KVCache
from llm_lab.tokenizers.base import Tokenizer


def encode_segments(
    template: Template | JinjaTemplate,
    tokenizer: Tokenizer,
    messages: list[Message],
    add_generation_prompt: bool,
) -> list[int]:
    """The ids of a conversation as training encodes it: segment by segment."""
    return [
        i for text, _ in template.segments(messages, add_generation_prompt) for i in tokenizer.encode(text)
    ]


class Chat:
    """A conversation with ``net``: :meth:`say` streams the answer to a user message; ``sampling``
    holds :meth:`GPT.stream`'s settings (``temperature``, ``top_k``, ``top_p``, ``generator``)."""

    def __init__(
        self,
        net: GPT,
        tokenizer: Tokenizer,
        template: Template | JinjaTemplate,
        max_new_tokens: int = 200,
        system: str | None = None,
        **sampling: Any,
    ) -> None:
        self.net, self.tokenizer, self.template = net, tokenizer, template
        self.max_new_tokens, self.sampling = max_new_tokens, sampling
        self.eot_id = tokenizer.token_to_id(template.end_of_turn)
        self.system = system
        self.reset()

    def reset(self, system: str | None = None) -> None:
        """Forget the conversation (``/reset``); a ``system`` message starts the new one."""
        self.system = system if system is not None else self.system
        self.messages: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        self.ids: list[int] = []  # every id of the conversation so far
        self.cache = [KVCache() for _ in self.net.blocks]

    def _new_ids(self, message: str) -> list[int]:
        """The ids the turn adds: what the template renders after the last answer (the end of its
        turn, the user's message, the assistant's header). The answer itself is already in
        ``ids`` as the model sampled it, which may split into tokens otherwise than encoding it."""
        before = self.template.segments(self.messages) if self.messages else []
        self.messages.append({"role": "user", "content": message})
        after = self.template.segments(self.messages, add_generation_prompt=True)
        answered = max((i + 1 for i, (_, is_response) in enumerate(before) if is_response), default=0)
        return [i for text, _ in after[answered:] for i in self.tokenizer.encode(text)]

    def say(self, message: str) -> Iterator[str]:
        """Stream the assistant's answer to ``message`` as pieces of text, as the tokens arrive."""
        self.ids += self._new_ids(message)
        limit = self.net.config.context_length - self.max_new_tokens
        if len(self.ids) > limit:  # too long: keep the newest tokens, encoded afresh
            self.ids = self.ids[-max(limit, 1) :]
            self.cache = [KVCache() for _ in self.net.blocks]
        device = next(self.net.parameters()).device
        idx = torch.tensor([self.ids], device=device)
        answer: list[int] = []
        shown = ""
        for next_id in self.net.stream(
            idx, self.max_new_tokens, eos_id=self.eot_id, kv_cache=self.cache, **self.sampling
        ):
            token = int(next_id[0])
            self.ids.append(token)
            if token == self.eot_id:
                break
            answer.append(token)
            text = self.tokenizer.decode(answer)
            if not text.endswith("\ufffd"):  # a character cut between tokens waits for its end
                yield text[len(shown) :]
                shown = text
        text = self.tokenizer.decode(answer)
        if text != shown:
            yield text[len(shown) :]
        if self.ids[-1] != self.eot_id and self.eot_id is not None:  # cut at max_new_tokens: close the turn
            self.ids.append(self.eot_id)
        self.messages.append({"role": "assistant", "content": text})

    def reply(self, messages: list[Message]) -> str:
        """The whole answer to a conversation ending with a user message (a fresh chat each call)."""
        self.reset()
        *history, last = messages
        self.messages = list(history)
        return "".join(self.say(last["content"]))

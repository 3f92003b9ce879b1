"""A model as the judge of another's answers (Raschka ch. 7.8; Zheng et al. 2023, "Judging
LLM-as-a-judge"): it reads the instruction, the reference answer and the response, and gives a score
from 0 to 100 in the book's words. Any local chat model does (``judge.init_from``); a small one
judges badly, which is the lesson the book draws too.
"""

from __future__ import annotations

import re
from typing import Any

from llm_lab.data.templates import CHATML, model_template
from llm_lab.models.chat import Chat
from llm_lab.models.pretrained import load_model
from llm_lab.tokenizers.special import add_special_tokens

_INTEGER = re.compile(r"\d+")


def judge_prompt(instruction: str, reference: str, response: str) -> str:
    """The book's prompt (ch. 7.8), with the instruction in place of its Alpaca-formatted input."""
    return (
        f"Given the input `{instruction}` and correct output `{reference}`, score the model response "
        f"`{response}` on a scale from 0 to 100, where 100 is the best score. "
        "Respond with the integer number only."
    )


def parse_score(text: str) -> int | None:
    """The first integer of the judge's answer if it is in 0..100, else None (no score)."""
    match = _INTEGER.search(text)
    if match is None or not 0 <= int(match.group()) <= 100:
        return None
    return int(match.group())


class Judge:
    """The model of ``init_from`` (a run or Hugging Face folder) with its template (its run's or
    folder's own, else ChatML), answering greedily in up to ``max_new_tokens`` tokens."""

    def __init__(self, init_from: str, max_new_tokens: int = 8) -> None:
        loaded = load_model(init_from)
        template = model_template(init_from) or CHATML
        tokenizer = add_special_tokens(loaded.tokenizer, template.special_tokens)
        loaded.net.resize_vocab(tokenizer.vocab_size)
        self.chat = Chat(loaded.net.eval(), tokenizer, template, max_new_tokens, temperature=0.0)

    def score(self, rows: list[dict[str, Any]], key: str = "response") -> list[int | None]:
        """A score per row (``instruction``, ``reference`` and the answer under ``key``)."""
        return [
            parse_score(
                self.chat.reply(
                    [{"role": "user", "content": judge_prompt(r["instruction"], r["reference"], r[key])}]
                )
            )
            for r in rows
        ]

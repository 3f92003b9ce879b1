"""Generated text from fixed prompts, logged to TensorBoard every N steps while a GPT trains.

Reading samples is the quickest sanity check of a language model (Raschka ch. 5.1.3): the loss
says *that* it learns, samples say *what* -- first random tokens, then frequent words, then
syntax. The prompts and the random seed stay fixed, so the samples of successive steps differ only
because the weights did.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from llm_lab.callbacks.periodic import EveryNSteps
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.loggers import markdown_cell


class TextSamples(EveryNSteps):
    """Every ``every_n_steps`` optimizer steps (and at the end), continue each prompt.

    Needs a LightningModule with a ``tokenizer`` (``encode``/``decode``) and a ``net`` with
    ``generate`` (e.g. ``NextTokenLM`` wrapping :class:`llm_lab.models.gpt.GPT`). The text goes to
    TensorBoard's *Text* tab under ``samples/<prompt>``, the prompt set apart from what follows.
    """

    def __init__(
        self,
        prompts: list[str],
        every_n_steps: int = 200,
        max_new_tokens: int = 40,
        temperature: float = 0.8,
        top_k: int | None = 40,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_steps)
        if not prompts or any(not p for p in prompts):
            raise ArgumentError(
                "prompts",
                "needs non-empty prompts",
                'e.g. ["The function", "A list is"]',
            )
        self.prompts = list(prompts)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed

    def samples(self, pl_module: L.LightningModule) -> list[str]:
        """The continuation of every prompt, without the prompt (one seeded generator per call)."""
        # Any: the tokenizer and net are duck-typed (see the class docstring).
        tokenizer: Any = getattr(pl_module, "tokenizer", None)
        net: Any = getattr(pl_module, "net", None)
        if tokenizer is None or not hasattr(net, "generate"):
            raise ConfigError(
                "callbacks.text_samples",
                "the model has no tokenizer or its net cannot generate",
                "use it with model=gpt (NextTokenLM around a GPT)",
            )
        generator = torch.Generator(pl_module.device).manual_seed(self.seed)
        texts = []
        for prompt in self.prompts:
            ids = tokenizer.encode(prompt)
            out = net.generate(
                torch.tensor([ids], device=pl_module.device),
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                generator=generator,
            )
            texts.append(tokenizer.decode(out[0, len(ids) :].tolist()))
        return texts

    def page(self, prompt: str, continuation: str) -> str:
        """One sample as the Text tab shows it: the prompt in bold, then what the model wrote after
        it as a code block (four leading spaces: kept verbatim, not read as Markdown)."""
        sampling = f"temperature {self.temperature:g}" + (f", top-k {self.top_k}" if self.top_k else "")
        lines = continuation.splitlines() or [""]
        return "\n".join(
            [
                f"**prompt:** {markdown_cell(prompt)}",
                "",
                f"**continuation** ({self.max_new_tokens} tokens at most, {sampling}):",
                "",
                *("    " + line for line in lines),
            ]
        )

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        boards = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not boards:
            return
        # Every process generates (the same text: same seed): under FSDP each forward gathers the
        # weights from all of them. Only the first writes.
        texts = self.samples(pl_module)
        if not trainer.is_global_zero:
            return
        for prompt, text in zip(self.prompts, texts, strict=True):
            for board in boards:
                # The tag names the prompt: the Text tab lists samples by tag.
                board.experiment.add_text(f"samples/{prompt}", self.page(prompt, text), trainer.global_step)

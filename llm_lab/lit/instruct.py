"""Supervised instruction fine-tuning (Raschka ch. 7; Ouyang et al. 2022, §3.5 "SFT") as one
LightningModule: the next-token loss on the response tokens only, and the book's evaluation after
it — the model answers the test instructions, and the answers are scored.

The batches come from ``llm_lab.data.instruct`` with every prompt target set to ``-100``, which
``F.cross_entropy`` ignores, so ``val/loss`` is the mean negative log-likelihood per *response*
token. The test stage reports, for the tuned model and for the same model before tuning (scored at
the start of ``fit``):

- ``test/response_nll``: the reference responses' NLL per token (lower: the model finds the right
  answers more likely);
- ``test/token_f1`` and ``test/exact_match``: the greedy answer to each test instruction against
  its reference (SQuAD's measures, ``llm_lab.eval.answers``).

The answers go to ``responses.jsonl`` in the run folder (before and after) and to TensorBoard's
Text tab.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from llm_lab.atomic import replacing
from llm_lab.data.instruct import IGNORE, InstructDataModule
from llm_lab.data.templates import template_record
from llm_lab.errors import ArgumentError
from llm_lab.eval.answers import exact_match, token_f1
from llm_lab.lit.base import OptimizerFactory, SchedulerFactory
from llm_lab.lit.lm import Batch, NextTokenLM
from llm_lab.loggers import markdown_table
from llm_lab.models.chat import Chat

SCORES = ("response_nll", "token_f1", "exact_match")


class InstructLM(NextTokenLM):
    """Next-token loss on responses; answers and scores the test instructions (see the module).

    The tokenizer (with the template's special tokens), the template and the test examples come
    from the DataModule ``data``; the net grows its embedding to hold the new tokens
    (mean-initialised rows, :meth:`llm_lab.models.gpt.GPT.resize_vocab`). ``max_responses`` test
    instructions are answered greedily with up to ``max_new_tokens`` tokens each."""

    LOGGED: tuple[str, ...] = (
        "train/loss",
        "train/grad_norm",
        "val/loss",
        "val/perplexity",
        "test/response_nll",
        "test/response_nll_before",
        "test/token_f1",
        "test/token_f1_before",
        "test/exact_match",
        "test/exact_match_before",
    )

    def __init__(
        self,
        net: Callable[..., nn.Module],
        vocab_size: int,
        data: InstructDataModule,
        tokenizer: Any = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: nn.Module | None = None,
        max_new_tokens: int = 64,
        max_responses: int = 100,
        score_before: bool = True,
    ) -> None:
        tokenizer = data.tokenizer  # the starting model's, with the template's tokens added
        if pretrained is not None:  # init_from's model, its embedding grown to hold them
            pretrained.resize_vocab(tokenizer.vocab_size)  # type: ignore[operator]
        super().__init__(net, tokenizer.vocab_size, tokenizer, optimizer, scheduler, pretrained)
        self.save_hyperparameters(
            ignore=["net", "tokenizer", "optimizer", "scheduler", "pretrained", "data"], logger=False
        )
        context = getattr(getattr(self.net, "config", None), "context_length", None)
        if context is not None and data.max_length > context:
            raise ArgumentError(
                "max_length",
                f"examples of {data.max_length} tokens are longer than the model's context ({context})",
                f"use at most {context}",
            )
        self.template, self.test_examples = data.template, list(data.splits.get("test", []))
        self.max_new_tokens, self.max_responses, self.score_before = (
            max_new_tokens,
            max_responses,
            score_before,
        )
        self.before: dict[str, Any] = {}
        self._test_sum, self._test_count = 0.0, 0

    def setup(self, stage: str) -> None:
        """Beside the checkpoints: the tokenizer with the template's tokens (it replaces the
        starting model's) and the template, which the chat (generate.py) reads."""
        super().setup(stage)
        if stage == "fit" and self.trainer.is_global_zero:
            self.tokenizer.save(self.run_dir / "tokenizer.json")
            with replacing(self.run_dir / "template.json") as tmp:
                tmp.write_text(json.dumps(template_record(self.template), indent=2), encoding="utf-8")

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the response targets (``-100`` elsewhere), and their count."""
        x, y = batch
        count = int((y != IGNORE).sum())
        if count == 0:  # every answer of the batch was cut off: nothing to learn here
            return self.net(x).sum() * 0.0, 0
        logits = self.net(x)
        return F.cross_entropy(logits.flatten(0, -2).float(), y.flatten(), ignore_index=IGNORE), count

    # ----------------------------------------------------------------------------- scoring
    def response_nll(self, loader: Any) -> float:
        """Mean NLL per response token over ``loader`` (the weights as they are now)."""
        total, count = 0.0, 0
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            for x, y in loader:
                loss, n = self.loss((x.to(self.device), y.to(self.device)))
                total, count = total + float(loss) * n, count + n
        self.net.train(was_training)
        return total / max(count, 1)

    def answers(self) -> list[dict[str, Any]]:
        """Greedy answers to the first ``max_responses`` test instructions, with their scores."""
        chat = Chat(self.net, self.tokenizer, self.template, self.max_new_tokens, temperature=0.0)  # type: ignore[arg-type]
        rows = []
        for example in self.test_examples[: self.max_responses]:
            messages, reference = example.prompt_and_reference(self.template)
            answer = chat.reply(messages)
            rows.append(
                {
                    "instruction": messages[-1]["content"],
                    "reference": reference,
                    "response": answer,
                    "token_f1": token_f1(answer, reference),
                    "exact_match": exact_match(answer, reference),
                }
            )
        return rows

    def scores(self, loader: Any) -> dict[str, Any]:
        rows = self.answers()
        n = max(len(rows), 1)
        return {
            "response_nll": self.response_nll(loader),
            "token_f1": sum(r["token_f1"] for r in rows) / n,
            "exact_match": sum(r["exact_match"] for r in rows) / n,
            "rows": rows,
        }

    def on_fit_start(self) -> None:
        # The starting model's scores, for the before/after comparison (not on a resumed run: its
        # weights are no longer the starting ones).
        if self.score_before and self.test_examples and self.trainer.ckpt_path is None:
            self.before = self.scores(self.trainer.datamodule.test_dataloader())  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------- test stage
    def on_test_epoch_start(self) -> None:
        self._test_sum, self._test_count = 0.0, 0

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self._test_sum += float(loss) * n
        self._test_count += n

    def on_test_epoch_end(self) -> None:
        after = self.scores([])  # the NLL is the test steps' own
        after["response_nll"] = self._test_sum / max(self._test_count, 1)
        for name in SCORES:
            self.log(f"test/{name}", float(after[name]))
            if self.before:
                self.log(f"test/{name}_before", float(self.before[name]))
        if self.trainer.is_global_zero:
            self.write_responses(after["rows"], self.before.get("rows"))

    def write_responses(self, rows: list[dict[str, Any]], before: list[dict[str, Any]] | None) -> None:
        """``responses.jsonl`` (one test instruction a line, with the answer before tuning when it
        was scored) and the same as a table in TensorBoard's Text tab."""
        for i, row in enumerate(rows):
            if before is not None and i < len(before):
                row["response_before"] = before[i]["response"]
        with replacing(self.run_dir / "responses.jsonl") as tmp:
            tmp.write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
            )
        header = ["instruction", "reference", "response", *(["before tuning"] if before is not None else [])]
        table = markdown_table(
            header,
            [
                [r["instruction"], r["reference"], r["response"], r.get("response_before", "")][: len(header)]
                for r in rows
            ],
        )
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("responses/test", table, self.trainer.global_step)

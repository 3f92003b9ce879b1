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
  its reference (SQuAD's measures, ``llm_lab.eval.answers``);
- ``test/judge_score``, with ``judge_init_from`` a local chat model: its 0-100 score of each
  answer, asked in the book's words (``llm_lab.eval.judge``).

The answers go to ``responses.jsonl`` in the run folder (before and after) and to TensorBoard's
Text tab.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from safetensors.torch import save_file
from torch import nn

from llm_lab.atomic import replacing
from llm_lab.data.instruct import IGNORE, InstructDataModule
from llm_lab.data.templates import template_record
from llm_lab.errors import ArgumentError
from llm_lab.eval.answers import exact_match, token_f1
from llm_lab.eval.export import save_hf_folder
from llm_lab.eval.judge import Judge
from llm_lab.lit.base import OptimizerFactory, SchedulerFactory, limited_batches
from llm_lab.lit.lm import Batch, NextTokenLM
from llm_lab.loggers import markdown_table
from llm_lab.models.chat import Chat
from llm_lab.nn.lora import add_lora, merge_lora, save_peft_adapter

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
        "test/judge_score",
        "test/judge_score_before",
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
        judge_init_from: str | None = None,
        trainable: str = "all",
        lora: dict[str, Any] | None = None,
    ) -> None:
        tokenizer = data.tokenizer  # the starting model's, with the template's tokens added
        if pretrained is not None:  # init_from's model, its embedding grown to hold them
            pretrained.resize_vocab(tokenizer.vocab_size)  # type: ignore[operator]
        super().__init__(net, tokenizer.vocab_size, tokenizer, optimizer, scheduler, pretrained)
        # Objects, and lora (a config node): checkpoints are read back weights-only (self.lora is kept).
        ignored = ["net", "tokenizer", "optimizer", "scheduler", "pretrained", "data", "lora"]
        self.save_hyperparameters(ignore=ignored, logger=False)
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
        self.judge_init_from = judge_init_from
        if trainable not in ("all", "lora"):
            raise ArgumentError("trainable", f"unknown value {trainable!r}", "use all or lora")
        # Plain values (a config's list is not one): the checkpoint keeps them, read back weights-only.
        plain: dict[str, Any] = {
            k: v if isinstance(v, str | int | float) else list(v) for k, v in dict(lora or {}).items()
        }
        self.lora: dict[str, Any] | None = plain if trainable == "lora" else None
        if self.lora is not None:  # the starting weights frozen, low-rank adapters trained beside them
            add_lora(self.net, **self.lora)
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

    def on_fit_start(self) -> None:
        if self.lora is not None and self.trainer.ckpt_path is None and self.trainer.is_global_zero:
            # The starting model as a Hugging Face folder, which the adapter names as its base. The
            # adapters' B starts at zero, so merging a copy now gives exactly the starting weights.
            start = merge_lora(copy.deepcopy(self.net))
            save_hf_folder(start, self.tokenizer, self.run_dir / "base_hf")  # type: ignore[arg-type]
        self.score_starting_model()

    def on_fit_end(self) -> None:
        """``model.safetensors`` of the tuned net; with LoRA, the adapter in peft's format
        (``adapter/``, its ``base_model_name_or_path`` the ``base_hf/`` export) and the merged model
        as a Hugging Face folder (``hf/``)."""
        if self.lora is None:
            super().on_fit_end()
            return
        if not self.trainer.is_global_zero:
            return
        save_peft_adapter(self.net, self.run_dir / "adapter", str((self.run_dir / "base_hf").resolve()))  # type: ignore[arg-type]
        merged = merge_lora(copy.deepcopy(self.net))
        save_hf_folder(merged, self.tokenizer, self.run_dir / "hf")  # type: ignore[arg-type]
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in merged.state_dict().items()}
        with replacing(self.run_dir / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.lora is not None:  # llm_lab.run_dir.load_net puts the adapters on and merges them
            checkpoint["lora"] = self.lora

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
        """Greedy answers to ``max_responses`` test instructions spread evenly over the test set
        (the built-in one is sorted by module), with their scores."""
        chat = Chat(self.net, self.tokenizer, self.template, self.max_new_tokens, temperature=0.0)  # type: ignore[arg-type]
        rows = []
        every = max(1, len(self.test_examples) // max(self.max_responses, 1))
        for example in self.test_examples[::every][: self.max_responses]:
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

    def score_starting_model(self) -> None:
        # The starting model's scores, for the before/after comparison (not on a resumed run: its
        # weights are no longer the starting ones), on the batches the test stage scores after
        # training (``trainer.limit_test_batches``, as Lightning counts it): the same responses.
        if self.score_before and self.test_examples and self.trainer.ckpt_path is None:
            loader = self.trainer.datamodule.test_dataloader()  # type: ignore[attr-defined]
            batches = limited_batches(len(loader), self.trainer.limit_test_batches)
            self.before = self.scores(itertools.islice(loader, batches))

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
        if self.judge_init_from is not None:
            self.judge(after, self.before)
        for name in (*SCORES, "judge_score"):
            if name in after:
                self.log(f"test/{name}", float(after[name]))
            if name in self.before:
                self.log(f"test/{name}_before", float(self.before[name]))
        if self.trainer.is_global_zero:
            self.write_responses(after["rows"], self.before.get("rows"))

    def judge(self, *results: dict[str, Any]) -> None:
        """Scores from 0 to 100 by the judge model (``judge_init_from``), the book's way: each
        answer's in its row, their mean (over the answers it gave a number for) in ``results``."""
        judge = Judge(self.judge_init_from)  # type: ignore[arg-type]
        for result in results:
            if not result:
                continue
            for row, score in zip(result["rows"], judge.score(result["rows"]), strict=True):
                row["judge_score"] = score
            given = [row["judge_score"] for row in result["rows"] if row["judge_score"] is not None]
            result["judge_score"] = sum(given) / len(given) if given else float("nan")

    def write_responses(self, rows: list[dict[str, Any]], before: list[dict[str, Any]] | None) -> None:
        """``responses.jsonl`` (one test instruction a line, with the answer before tuning when it
        was scored) and the same as a table in TensorBoard's Text tab."""
        for i, row in enumerate(rows):
            if before is not None and i < len(before):
                row["response_before"] = before[i]["response"]
                if "judge_score" in before[i]:
                    row["judge_score_before"] = before[i]["judge_score"]
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

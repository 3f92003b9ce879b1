"""Preference pairs (``llm_lab.data.preference``) as batches for DPO: ids and response masks.

Each side of a pair is one conversation — the prompt's messages, then the assistant's answer —
rendered by the chat template and encoded segment by segment; the mask is true on the answer's
tokens (and its end-of-turn token), the only ones DPO scores. A batch stacks the B chosen rows over
the B rejected ones, right-padded to the longest: one forward pass of the policy (and one of the
reference) scores both, and a causal model's logits at real tokens never see the padding after them.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from llm_lab.data.own_answers import own_answers
from llm_lab.data.preference import Message, Pair, builtin_pairs, hub_pairs, read_pairs
from llm_lab.data.stdlib_pairs import module_split
from llm_lab.data.templates import JinjaTemplate, Template, choose_template
from llm_lab.errors import ArgumentError, DataError
from llm_lab.models.gpt import GPT
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.special import add_special_tokens

Encoded = tuple[list[int], list[bool]]  # ids, and which of them are the response's
REJECTED = ("own", "sibling", "both")  # the built-in pairs' rejected answers
log = logging.getLogger(__name__)


def conversation_ids(
    tokenizer: Tokenizer, template: Template | JinjaTemplate, prompt: Sequence[Message], answer: str
) -> Encoded:
    """The prompt's messages and the assistant's ``answer``, rendered by the chat ``template``
    (``llm_lab.data.templates``) and encoded segment by segment, with the answer's mask."""
    ids: list[int] = []
    mask: list[bool] = []
    for part, is_response in template.segments([*prompt, {"role": "assistant", "content": answer}]):
        encoded = tokenizer.encode(part)
        ids += encoded
        mask += [is_response] * len(encoded)
    return ids, mask


class PromptTooLong(DataError):
    """A prompt that leaves no room in the context for an answer."""


def encode_pair(
    tokenizer: Tokenizer, template: Template | JinjaTemplate, pair: Pair, max_length: int
) -> tuple[Encoded, Encoded]:
    """Both sides of ``pair``, each cut to ``max_length`` tokens (the answer's end is what goes); a
    prompt that leaves no room for an answer is a DataError naming the pair."""
    sides = []
    for answer in (pair.chosen, pair.rejected):
        ids, mask = conversation_ids(tokenizer, template, pair.prompt, answer)
        prompt_length = mask.index(True) if True in mask else len(mask)
        if prompt_length >= max_length:
            raise PromptTooLong(
                f"{pair.where}: the prompt is {prompt_length} tokens, and the model reads "
                f"{max_length} (max_length): shorten the prompt, or drop the pair"
            )
        sides.append((ids[:max_length], mask[:max_length]))
    return sides[0], sides[1]


def check_fits_context(max_length: int, net: object) -> None:
    """Refuse conversations longer than the starting model reads (``net.config.context_length``)."""
    context = getattr(getattr(net, "config", None), "context_length", None)
    if isinstance(context, int) and max_length > context:
        raise ArgumentError(
            "max_length",
            f"conversations of up to {max_length} tokens, and the starting model reads {context}",
            f"use max_length={context} or less",
        )


def collate(batch: Sequence[tuple[Encoded, Encoded]]) -> dict[str, Tensor]:
    """``ids`` and ``mask`` of shape (2B, T): the chosen rows, then the rejected ones, right-padded
    (padding: id 0, outside the mask)."""
    rows = [chosen for chosen, _ in batch] + [rejected for _, rejected in batch]
    length = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (row_ids, row_mask) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        mask[i, : len(row_mask)] = torch.tensor(row_mask)
    return {"ids": ids, "mask": mask}


def is_validation(unit: str, val_fraction: float, seed: int) -> bool:
    """Whether a split unit (a row of a file or dataset) is a validation one:
    a hash of the seed and its name, stable across runs and machines."""
    digest = hashlib.blake2b(f"{seed}:{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < val_fraction


class PreferenceDataModule(L.LightningDataModule):
    """Pairs from ``path`` (a .jsonl file), ``hf_dataset`` (with ``hf_split`` and ``columns``)
    or, with neither, the built-in ones, written in the starting model's chat template
    (:func:`~llm_lab.data.templates.choose_template`: an instruct run's ``template.json``;
    ``template`` when it has none), whose special tokens are added to
    ``tokenizer``. Validation: the built-in pairs of the modules the instruct stage held out, or
    ``val_fraction`` of a file's rows; at most ``max_pairs`` for training and ``max_val_pairs``
    for validation (drawn from every module: a quick run).

    The built-in pairs' rejected answer (``rejected``): ``own`` — the starting model's
    (``pretrained``) own answer to the question (``llm_lab.data.own_answers``), sampled at
    ``own_temperature`` and no longer than the chosen answer, a pair left out when it equals the
    chosen one; ``sibling`` — the first sentence of another function of the same package;
    ``both`` — one pair of each per question. A file's or dataset's pairs keep their own."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: str = "alpaca",
        use_model_template: bool = True,
        model_folder: str | None = None,
        path: str | None = None,
        hf_dataset: str | None = None,
        hf_split: str = "train",
        columns: dict[str, str] | None = None,
        val_fraction: float = 0.1,
        max_pairs: int | None = None,
        max_val_pairs: int | None = None,
        max_length: int = 128,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        rejected: str = "own",
        own_temperature: float = 1.0,
        pretrained: GPT | None = None,
    ) -> None:
        super().__init__()
        PreferenceDataModule.check_arguments(
            path,
            hf_dataset,
            val_fraction,
            max_pairs,
            max_val_pairs,
            max_length,
            batch_size,
            rejected,
            own_temperature,
        )
        self.template = choose_template(template, model_folder, use_model_template)
        self.tokenizer = add_special_tokens(tokenizer, self.template.special_tokens)
        self.path, self.hf_dataset, self.hf_split, self.columns = path, hf_dataset, hf_split, columns
        self.val_fraction, self.max_pairs, self.max_length = val_fraction, max_pairs, max_length
        self.max_val_pairs = max_val_pairs
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.rejected, self.own_temperature, self.pretrained = rejected, own_temperature, pretrained
        check_fits_context(max_length, pretrained)  # before any answer is generated
        self.train_pairs: list[Pair] = []
        self.val_pairs: list[Pair] = []

    @staticmethod
    def check_arguments(
        path: str | None = None,
        hf_dataset: str | None = None,
        val_fraction: float = 0.1,
        max_pairs: int | None = None,
        max_val_pairs: int | None = None,
        max_length: int = 128,
        batch_size: int = 8,
        rejected: str = "own",
        own_temperature: float = 1.0,
    ) -> None:
        """Refuse impossible settings by their argument's name (also before anything is built)."""
        if path is not None and hf_dataset is not None:
            raise ArgumentError("hf_dataset", "both path and hf_dataset are given", "give one of them")
        if not 0 < val_fraction < 1:
            raise ArgumentError("val_fraction", f"{val_fraction} is not in (0, 1)", "e.g. 0.1")
        for name, count in (("max_pairs", max_pairs), ("max_val_pairs", max_val_pairs)):
            if count is not None and count < 1:
                raise ArgumentError(name, f"{count} < 1", "use a positive count, or null for all")
        if max_length < 2:
            raise ArgumentError("max_length", f"{max_length} < 2", "use the model's context length")
        if batch_size < 1:
            raise ArgumentError("batch_size", f"{batch_size} < 1", "use a positive batch size")
        if rejected not in REJECTED:
            raise ArgumentError(
                "rejected", f"unknown source {rejected!r}", f"use one of {', '.join(REJECTED)}"
            )
        if not own_temperature >= 0:
            raise ArgumentError(
                "own_temperature", f"{own_temperature} < 0", "use 1.0 (the model's own), or 0: greedy"
            )

    def pairs(self) -> list[Pair]:
        if self.path is not None:
            return read_pairs(self.path)
        if self.hf_dataset is not None:
            return hub_pairs(self.hf_dataset, self.hf_split, self.columns)
        return builtin_pairs(seed=self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_pairs:
            return
        builtin = self.path is None and self.hf_dataset is None
        for pair in self.pairs():
            # The built-in pairs of the modules the instruct stage held out (its validation and test
            # modules): the starting model was tuned on none of them.
            held_out = (
                module_split(pair.group) != "train"
                if builtin
                else is_validation(pair.group, self.val_fraction, self.seed)
            )
            (self.val_pairs if held_out else self.train_pairs).append(pair)
        source = self.path or self.hf_dataset or "built-in pairs"
        if not self.train_pairs or not self.val_pairs:
            raise DataError(
                f"{source}: {len(self.train_pairs)} pairs for training and {len(self.val_pairs)} for "
                "validation (give more pairs, or change data.val_fraction)"
            )
        random.Random(self.seed).shuffle(self.train_pairs)  # max_pairs draws from every module
        self.train_pairs = self.train_pairs[: self.max_pairs]
        if self.max_val_pairs is not None and self.max_val_pairs < len(self.val_pairs):
            # A sample of every module's pairs, kept in their order (before any own answer is made).
            kept = sorted(random.Random(self.seed).sample(range(len(self.val_pairs)), self.max_val_pairs))
            self.val_pairs = [self.val_pairs[i] for i in kept]
        if builtin and self.rejected != "sibling":
            self.train_pairs, self.val_pairs = self._with_own_answers(self.train_pairs, self.val_pairs)
        self._encoded = {}
        for name in ("train", "val"):
            pairs = self.train_pairs if name == "train" else self.val_pairs
            # A built-in pair whose prompt the context cannot hold is left out; a user's is refused.
            encoded = [self._encode(p, skip_long=builtin) for p in pairs]
            self._encoded[name] = [e for e in encoded if e is not None]

    def _with_own_answers(self, *splits: list[Pair]) -> list[list[Pair]]:
        """Each split's pairs with the starting model's own answer as the rejected one (``own``),
        or beside the sibling pair (``both``); a pair whose own answer is the chosen one is left out."""
        if self.pretrained is None:
            raise ArgumentError(
                "rejected",
                f"rejected={self.rejected} takes the starting model's own answers, and none is given",
                "start from a model (init_from), or use rejected=sibling",
            )
        net = self.pretrained
        if net.config.vocab_size < self.tokenizer.vocab_size:  # the template's tokens, as DPO grows it
            net.resize_vocab(self.tokenizer.vocab_size)
        pairs = [p for split in splits for p in split]
        budgets = [len(self.tokenizer.encode(p.chosen)) for p in pairs]  # no longer than the chosen
        started = time.perf_counter()
        answers = own_answers(
            net,
            self.tokenizer,
            self.template,
            [p.prompt for p in pairs],
            budgets,
            temperature=self.own_temperature,
            seed=self.seed,
        )
        own = [
            Pair(p.prompt, p.chosen, answer, p.where, p.group) if answer.strip() != p.chosen.strip() else None
            for p, answer in zip(pairs, answers, strict=True)
        ]
        result, start = [], 0
        for split in splits:
            kept = [p for p in own[start : start + len(split)] if p is not None]
            result.append(kept if self.rejected == "own" else [*split, *kept])
            start += len(split)
        dropped = own.count(None)
        log.info(
            f"built-in pairs: the starting model's own answers to {len(pairs)} questions, at temperature "
            f"{self.own_temperature:g}, in {time.perf_counter() - started:.0f} s, as the rejected ones "
            f"({dropped} equal to the chosen answer, left out)"
        )
        return result

    def _encode(self, pair: Pair, skip_long: bool) -> tuple[Encoded, Encoded] | None:
        try:
            return encode_pair(self.tokenizer, self.template, pair, self.max_length)
        except PromptTooLong:
            if skip_long:
                return None
            raise

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._encoded["train"],  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._encoded["val"],  # type: ignore[arg-type]
            batch_size=self.batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": self.tokenizer.vocab_size}

"""Instruction data: conversations → template → ids, the prompt masked (Raschka ch. 7.2-7.4).

The examples come from a file or a Hugging Face dataset (``llm_lab.data.instruct_rows``) or, by
default, from the built-in questions about the standard library (``llm_lab.data.stdlib_pairs``).
Each conversation is rendered to segments by the template and each segment encoded on its own
(:func:`encode`), so the ids are those the chat feeds at generation time. Targets are the inputs
shifted by one, and every target inside the prompt is ``-100``, which ``F.cross_entropy`` ignores:
the loss is on the responses only (the book's default; ``mask_prompt=False`` trains on both, its
exercise 7.2). :func:`collate` pads each batch to its longest row only (dynamic padding).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from llm_lab.data.instruct_rows import Example, read_examples, read_hf_examples
from llm_lab.data.resumable import ResumableLoader
from llm_lab.data.stdlib_pairs import module_split, stdlib_pairs
from llm_lab.data.templates import TEMPLATES, choose_template
from llm_lab.errors import ArgumentError, DataError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.special import add_special_tokens

IGNORE = -100  # F.cross_entropy's default ignore_index
SPLITS = ("train", "val", "test")


def encode(
    segments: Sequence[tuple[str, bool]], tokenizer: Tokenizer, mask_prompt: bool = True
) -> tuple[list[int], list[int]]:
    """Ids of a rendered conversation and the targets that go with them: ``targets[i]`` is the
    token after ``ids[i]``, or ``-100`` inside the prompt (with ``mask_prompt``)."""
    ids: list[int] = []
    learn: list[bool] = []
    for text, is_response in segments:
        part = tokenizer.encode(text)
        ids += part
        learn += [is_response or not mask_prompt] * len(part)
    targets = [t if keep else IGNORE for t, keep in zip(ids[1:], learn[1:], strict=True)]
    return ids[:-1], targets


def fit_to_length(
    ids: list[int], targets: list[int], max_length: int, where: str
) -> tuple[list[int], list[int]]:
    """Cut a long response at ``max_length`` tokens; a prompt that fills them alone is refused."""
    if len(ids) <= max_length:
        return ids, targets
    if all(t == IGNORE for t in targets[:max_length]) and any(t != IGNORE for t in targets):
        raise DataError(
            f"{where}: the prompt is longer than the context ({max_length} tokens), so no response "
            "token is left to learn (shorten the prompt, drop the row, or raise data.max_length up to "
            "the model's context)"
        )
    return ids[:max_length], targets[:max_length]


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch padded to its longest row (dynamic padding, Raschka ch. 7.3): inputs with
    ``pad_id``, targets with ``-100``, so padding is neither attended to by a real token (it comes
    after them, and attention is causal) nor learned."""
    longest = max(len(ids) for ids, _ in rows)
    x = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    y = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for i, (ids, targets) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(targets)] = torch.tensor(targets)
    return x, y


def split_examples(
    examples: list[Example], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Example]]:
    """Train, validation and test: the built-in examples by their module (``group``), a file's by
    a seeded shuffle (the book's 85/5/10 split with the defaults)."""
    if examples and examples[0].group:
        return {s: [e for e in examples if module_split(e.group) == s] for s in SPLITS}
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_test, n_val = round(len(order) * test_fraction), round(len(order) * val_fraction)
    return {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


def builtin_examples() -> list[Example]:
    """The standard-library pairs (``llm_lab.data.stdlib_pairs``) as examples."""
    return [
        Example(f"built-in pair {i} ({p.module})", p.instruction, p.input, p.output, group=p.module)
        for i, p in enumerate(stdlib_pairs())
    ]


class InstructDataModule(L.LightningDataModule):
    """Batches of (ids, targets) for supervised fine-tuning, from ``path`` (a .json/.jsonl file),
    ``hf_dataset`` (with ``hf_split`` and ``columns``) or, when neither is given, the built-in pairs.

    ``template`` names the lab's template; a Hugging Face ``model_folder`` (the run's ``init_from``)
    with its own ``chat_template`` uses that instead when ``use_model_template``. The template's
    special tokens are added to ``tokenizer``. Rows longer than ``max_length`` tokens lose the end
    of their response; ``max_examples`` caps the training examples (a quick run)."""

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
        mask_prompt: bool = True,
        max_length: int = 128,
        max_examples: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        InstructDataModule.check_arguments(
            model_folder,
            template,
            path,
            hf_dataset,
            max_length,
            max_examples,
            val_fraction,
            test_fraction,
            batch_size,
        )
        self.template = choose_template(template, model_folder, use_model_template)
        self.tokenizer = add_special_tokens(tokenizer, self.template.special_tokens)
        self.path, self.hf_dataset, self.hf_split, self.columns = path, hf_dataset, hf_split, columns
        self.mask_prompt, self.max_length, self.max_examples = mask_prompt, max_length, max_examples
        self.fractions = (val_fraction, test_fraction)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.splits: dict[str, list[Example]] = {}
        self.encoded: dict[str, list[tuple[list[int], list[int]]]] = {}

    @staticmethod
    def check_arguments(
        model_folder: str | None = None,
        template: str = "alpaca",
        path: str | None = None,
        hf_dataset: str | None = None,
        max_length: int = 128,
        max_examples: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        batch_size: int = 8,
    ) -> None:
        """What the settings alone rule out (the preflight calls it before anything is read)."""
        if model_folder is None:
            raise ArgumentError(
                "model_folder",
                "instruction tuning starts from a pretrained model (and its tokenizer), and none is given",
                "name one: a run folder, a .ckpt, a Hugging Face folder, or an experiment's name (gpt)",
            )
        if template not in TEMPLATES:
            raise ArgumentError(
                "template", f"unknown template {template!r}", f"use one of {', '.join(TEMPLATES)}"
            )
        if path is not None and hf_dataset is not None:
            raise ArgumentError("hf_dataset", "path and hf_dataset are both given", "give one of them")
        for name, value in (
            ("max_length", max_length),
            ("batch_size", batch_size),
            ("max_examples", max_examples),
        ):
            if value is not None and value < 1:
                raise ArgumentError(name, f"{value} < 1", "use 1 or more")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ArgumentError(
                "val_fraction",
                f"val {val_fraction} + test {test_fraction} leave no training rows",
                "e.g. 0.05 and 0.1",
            )

    def examples(self) -> list[Example]:
        """The rows of ``path``, of ``hf_dataset``, or the built-in pairs."""
        if self.path is not None:
            return read_examples(self.path)
        if self.hf_dataset is not None:
            return read_hf_examples(self.hf_dataset, self.hf_split, self.columns)
        return builtin_examples()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = split_examples(self.examples(), *self.fractions, self.seed)
        if self.max_examples is not None:
            train = list(self.splits["train"])
            random.Random(self.seed).shuffle(train)
            self.splits["train"] = train[: self.max_examples]
        for name, examples in self.splits.items():
            encoded = [(e, self.encode_example(e)) for e in examples]
            # A built-in pair whose prompt the context cannot hold is left out (a user's row is refused).
            kept = [(e, rows) for e, rows in encoded if rows is not None]
            if not kept:
                raise ArgumentError(
                    "val_fraction"
                    if name == "val"
                    else "test_fraction"
                    if name == "test"
                    else "max_examples",
                    f"the {name} split is empty",
                    "use more rows or a larger fraction",
                )
            self.splits[name] = [e for e, _ in kept]
            self.encoded[name] = [rows for _, rows in kept]

    def encode_example(self, example: Example) -> tuple[list[int], list[int]] | None:
        """An example's (ids, targets), cut to ``max_length``; None for a built-in pair whose
        prompt alone is longer."""
        segments = self.template.segments(example.conversation(self.template))
        ids, targets = encode(segments, self.tokenizer, self.mask_prompt)
        try:
            return fit_to_length(ids, targets, self.max_length, example.where)
        except DataError:
            if example.group:
                return None
            raise

    @property
    def pad_id(self) -> int:
        """Padding is never learned (its targets are -100), so any id does: the end-of-turn one."""
        return self.tokenizer.token_to_id(self.template.end_of_turn) or 0

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        rows: Any = self.encoded[name]  # a list is a map-style dataset
        collate_fn = partial(collate, pad_id=self.pad_id)
        if shuffle:
            return ResumableLoader(
                rows, self.batch_size, True, self.seed, False, self.num_workers, collate_fn
            )
        return DataLoader(rows, self.batch_size, collate_fn=collate_fn, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def model_kwargs(self) -> dict[str, Any]:
        """The model reads the data itself: its tokenizer (with the template's tokens), template,
        test examples and length cap. (One object: Hydra would turn a dataclass handed to it, such
        as a :class:`Template`, into a config.)"""
        return {"vocab_size": self.tokenizer.vocab_size, "data": self}

"""Fine-tuning a decoder into a text classifier (Raschka ch. 6), as one LightningModule.

The starting model is ``init_from``'s pretrained GPT (``pretrained``) or, without one, a GPT of
``model.net``'s settings with random weights; its LM head is replaced by a class head
(:class:`~llm_lab.models.classifier.GPTClassifier`). What trains is ``trainable``:

- ``head``: the new head only (the pretrained features, read as they are);
- ``last_block``: the last Transformer block, the final norm and the head (ch. 6.7's choice);
- ``all``: every weight;
- ``lora``: low-rank adapters on the layers ``lora.targets`` names, and the head (Hu et al. 2021,
  :mod:`llm_lab.nn.lora`), merged into the weights for the export.

Logs ``{train,val,test}/loss``, ``/acc`` and ``/f1_macro`` (torchmetrics), the confusion matrix as a
TensorBoard image, and at test time the two baselines on the same split
(:mod:`llm_lab.eval.classification`); writes ``report.md`` (a per-class table), ``labels.json``
and a Hugging Face folder ``hf/`` that ``AutoModelForSequenceClassification`` loads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from llm_lab.atomic import replacing
from llm_lab.callbacks.attention_maps import heatmap_image
from llm_lab.data.classify import Batch
from llm_lab.errors import ArgumentError
from llm_lab.eval.classification import bag_of_words_accuracy, majority_accuracy, per_class_table
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory
from llm_lab.models.classifier import POOLINGS, GPTClassifier
from llm_lab.models.gpt import GPT
from llm_lab.nn.lora import add_lora
from llm_lab.nn.weight_decay import weight_decay_groups
from llm_lab.run_dir import net_record

log = logging.getLogger(__name__)
TRAINABLE = ("head", "last_block", "all", "lora")
STAGES = ("train", "val", "test")


def check_finetune(
    trainable: str = "last_block", pooling: str = "last", lora: dict[str, Any] | None = None
) -> None:
    """Refuse a freeze policy, pooling or LoRA setting that does not exist, by its name."""
    if trainable not in TRAINABLE:
        raise ArgumentError("trainable", f"unknown value {trainable!r}", f"use one of {', '.join(TRAINABLE)}")
    if pooling not in POOLINGS:
        raise ArgumentError("pooling", f"unknown value {pooling!r}", f"use one of {', '.join(POOLINGS)}")
    rank = (lora or {}).get("rank", 8)
    if not isinstance(rank, int) or rank < 1:
        raise ArgumentError("rank", f"{rank!r} is not a positive integer", "e.g. finetune.lora.rank=8")


def freeze(net: GPTClassifier, trainable: str, lora: dict[str, Any]) -> int:
    """Leave only what ``trainable`` names trainable; return how many parameters train."""
    if trainable == "lora":
        add_lora(net, **lora)
    elif trainable != "all":
        net.requires_grad_(False)
        if trainable == "last_block":
            net.blocks[-1].requires_grad_(True)
            net.ln_f.requires_grad_(True)
    net.score.requires_grad_(True)  # the new head always trains
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


class SequenceClassifier(LabModule):
    """A GPT classifier, its freeze policy and its metrics (see the module's docstring)."""

    LOGGED = (
        *(f"{stage}/{name}" for stage in STAGES for name in ("loss", "acc", "f1_macro")),
        "baseline/majority_acc",
        "baseline/bow_acc",
        "trainable/params",
        "trainable/share",
    )

    def __init__(
        self,
        net: Callable[..., GPT],
        vocab_size: int,
        labels: list[str],
        max_length: int = 128,
        class_weights: list[float] | None = None,
        trainable: str = "last_block",
        pooling: str = "last",
        dropout: float | None = None,
        lora: dict[str, Any] | None = None,
        tokenizer: Any = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: GPT | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        check_finetune(trainable, pooling, lora)
        ignore = ["net", "tokenizer", "optimizer", "scheduler", "pretrained"]
        self.save_hyperparameters(ignore=ignore, logger=False)
        body = pretrained if pretrained is not None else net(vocab_size=vocab_size)
        if body.config.context_length < max_length:
            raise ArgumentError(
                "max_length",
                f"texts of up to {max_length} tokens, and the model reads {body.config.context_length}",
                f"use max_length={body.config.context_length} or less",
            )
        self.tokenizer, self.labels, self.lora = tokenizer, list(labels), dict(lora or {})
        self.net = GPTClassifier.from_gpt(body, len(labels), pooling, dropout)
        weights = torch.tensor(class_weights) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        total = sum(p.numel() for p in self.net.parameters())
        self.trainable_params = freeze(self.net, trainable, self.lora)
        self.trainable_share = self.trainable_params / total
        log.info(
            f"finetune.trainable={trainable}: {self.trainable_params:,} of {total:,} parameters train "
            f"({self.trainable_share:.1%})"
        )
        n = len(labels)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_split": MetricCollection(
                    {
                        "acc": MulticlassAccuracy(n, average="micro"),
                        "f1_macro": MulticlassF1Score(n, average="macro"),
                    },
                    prefix=f"{stage}/",
                )
                for stage in STAGES
            }
        )
        self.confusion = nn.ModuleDict({s: MulticlassConfusionMatrix(n) for s in ("val", "test")})

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.net(ids, lengths)

    def scores(self, stage: str) -> MetricCollection:
        return cast(MetricCollection, self.metrics[f"{stage}_split"])  # a key "train" is a method

    def confusion_of(self, stage: str) -> MulticlassConfusionMatrix | None:
        return cast(MulticlassConfusionMatrix, self.confusion[stage]) if stage in self.confusion else None

    def step(self, batch: Batch, stage: str) -> Tensor:
        ids, lengths, y = batch
        logits = self.net(ids, lengths)
        weight = cast(Tensor | None, self.class_weights)
        loss = F.cross_entropy(logits.float(), y, weight=weight)
        self.scores(stage).update(logits, y)
        confusion = self.confusion_of(stage)
        if confusion is not None:
            confusion.update(logits, y)
        self.log(
            f"{stage}/loss", loss, batch_size=len(y), on_step=stage == "train", on_epoch=stage != "train"
        )
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "test")

    def end_of(self, stage: str) -> Tensor | None:
        """Log the stage's accuracy and macro-F1, and its confusion matrix as an image."""
        self.log_dict(self.scores(stage).compute())
        self.scores(stage).reset()
        metric = self.confusion_of(stage)
        if metric is None:
            return None
        confusion = metric.compute().cpu()
        metric.reset()
        rows = (confusion / confusion.sum(1, keepdim=True).clamp(min=1)).numpy()  # recall per class
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                image = heatmap_image(rows, self.labels)
                logger.experiment.add_image(
                    f"{stage}/confusion_matrix", image, self.global_step, dataformats="HWC"
                )
        return confusion

    def on_train_epoch_end(self) -> None:
        self.end_of("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.end_of("val")
        else:  # Lightning's sanity check: a few batches that count for nothing
            self.scores("val").reset()
            cast(MulticlassConfusionMatrix, self.confusion["val"]).reset()

    def on_test_epoch_end(self) -> None:
        confusion = self.end_of("test")
        data = self.trainer.datamodule  # type: ignore[attr-defined]
        train, test = data.encoded["train"], data.encoded["test"]
        train_labels, test_labels = [y for _, y in train], [y for _, y in test]
        texts = {name: [text for text, _ in data.rows[name]] for name in ("train", "test")}
        self.log("baseline/majority_acc", majority_accuracy(train_labels, test_labels))
        bow = bag_of_words_accuracy(
            texts["train"], train_labels, texts["test"], test_labels, len(self.labels)
        )
        self.log("baseline/bow_acc", bow)
        self.log("trainable/params", float(self.trainable_params))
        self.log("trainable/share", self.trainable_share)
        if confusion is not None and self.trainer.is_global_zero:
            table = per_class_table(confusion, self.labels)
            with replacing(self.run_dir / "report.md") as tmp:
                tmp.write_text(f"# Test split, per class\n\n{table}\n", encoding="utf-8")

    def param_groups(self) -> Iterable[Any]:
        """Weight decay on the trainable linear-layer weights only."""
        return weight_decay_groups(self.net)

    def on_fit_end(self) -> None:
        """``labels.json`` and the Hugging Face folder ``hf/`` (LoRA merged into a copy)."""
        if not self.trainer.is_global_zero:
            return
        from llm_lab.eval.export import save_hf_classifier

        with replacing(self.run_dir / "labels.json") as tmp:
            tmp.write_text(json.dumps(self.labels, indent=2), encoding="utf-8")
        save_hf_classifier(self.net, self.tokenizer, self.labels, self.run_dir / "hf")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The net's settings as plain values, its labels and adapters: what rebuilds it from the file.
        checkpoint["net"] = net_record(self.net)
        checkpoint["labels"] = self.labels
        if self.hparams.trainable == "lora":  # type: ignore[attr-defined]
            checkpoint["lora"] = self.lora

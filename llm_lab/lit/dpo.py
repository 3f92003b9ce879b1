"""Direct Preference Optimization (Rafailov et al. 2023) as one LightningModule.

The policy is the starting model (``init_from``: an instruction-tuned run), trained; the reference
is a frozen copy of it made before the first step, which the loss measures every log-ratio against
(``llm_lab/nn/dpo.py``). The reference is part of the module's state, so a resumed run keeps the
reference it started with, not a copy of the policy it resumes. Everything a language model run
writes — ``model.safetensors`` of the policy, its ``model_config.json``, checkpoints generate.py
reads — is :class:`~llm_lab.lit.lm.NextTokenLM`'s.

What it logs (TensorBoard: ``train/rewards/*`` every ``trainer.log_every_n_steps``, ``val/*`` at
each validation; the last ones in ``metrics.json``):

- ``rewards/chosen``, ``rewards/rejected``: the implicit rewards β·log π(y|x)/π_ref(y|x), mean over
  pairs; ``rewards/margin`` their difference; ``rewards/accuracy`` the share of pairs whose chosen
  answer has the higher reward (0 before the first step: policy = reference);
- ``val/preference_accuracy``: the share of held-out pairs where the policy gives the chosen answer
  the higher log-likelihood, and ``val/preference_accuracy_before`` the same for the reference —
  the starting model's own preference, which DPO should beat;
- ``val/chosen_nll``, ``val/chosen_nll_before``: the chosen answers' negative log-likelihood per
  token under the policy and the reference (DPO may lower both answers' likelihood while widening
  their gap; this says by how much the preferred ones paid).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from llm_lab.atomic import replacing
from llm_lab.data.dpo import check_fits_context
from llm_lab.data.templates import template_record
from llm_lab.errors import ArgumentError
from llm_lab.lit.base import OptimizerFactory, SchedulerFactory, is_logging_step
from llm_lab.lit.lm import NextTokenLM
from llm_lab.models.gpt import GPT
from llm_lab.nn.dpo import DPOLoss, check_dpo_arguments, dpo_loss, mean_token_nll, sequence_logprob

Batch = dict[str, Tensor]
REWARDS = ("chosen", "rejected", "margin", "accuracy")
# The validation sums, in this order (per pair, but for the token count).
SUMS = (
    "pairs",
    "loss",
    "chosen",
    "rejected",
    "accuracy",
    "preference",
    "preference_before",
    "chosen_logp",
    "chosen_logp_before",
    "chosen_tokens",
)


class DPO(NextTokenLM):
    """DPO of ``pretrained`` (required) against a frozen copy of it; ``beta``, ``label_smoothing``
    (conservative DPO), ``loss_type`` (``sigmoid``: DPO; ``ipo``) and ``rpo_alpha`` (the weight of
    the chosen answers' NLL added: RPO) are :func:`dpo_loss`'s."""

    LOGGED = (
        "train/loss",
        "train/grad_norm",
        *(f"train/rewards/{name}" for name in REWARDS),
        "val/loss",
        *(f"val/rewards/{name}" for name in REWARDS),
        "val/preference_accuracy",
        "val/preference_accuracy_before",
        "val/chosen_nll",
        "val/chosen_nll_before",
    )
    needs_starting_model = True  # the preflight refuses a run without init_from

    def __init__(
        self,
        net: Callable[..., nn.Module] | None = None,
        vocab_size: int = 0,
        tokenizer: Any = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: nn.Module | None = None,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        loss_type: str = "sigmoid",
        rpo_alpha: float = 0.0,
    ) -> None:
        DPO.check_arguments(beta, label_smoothing, loss_type, rpo_alpha)
        if pretrained is None:
            raise ArgumentError(
                "pretrained",
                "DPO trains a starting model against a frozen copy of it, and none is given",
                "start from an instruction-tuned model",
            )
        rows = getattr(getattr(pretrained, "config", None), "vocab_size", None)
        if isinstance(rows, int) and vocab_size > rows:  # the template's tokens, added to the tokenizer
            pretrained.resize_vocab(vocab_size)  # type: ignore[operator]
        # The net is the starting model itself: model.net's settings (null) build nothing.
        super().__init__(GPT.from_size, vocab_size, tokenizer, optimizer, scheduler, pretrained)
        self.beta, self.label_smoothing, self.loss_type = beta, label_smoothing, loss_type
        self.rpo_alpha = rpo_alpha
        self.reference = copy.deepcopy(self.net).requires_grad_(False).eval()
        self._sums = torch.zeros(len(SUMS), dtype=torch.float64)

    @staticmethod
    def check_arguments(
        beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid", rpo_alpha: float = 0.0
    ) -> None:
        check_dpo_arguments(beta, label_smoothing, loss_type, rpo_alpha)

    def setup(self, stage: str) -> None:
        """Refuse conversations longer than the model reads; beside the checkpoints, as an instruct
        run does: the tokenizer with the template's tokens and the template (the chat reads both)."""
        super().setup(stage)
        data = getattr(self.trainer, "datamodule", None)
        template, tokenizer = getattr(data, "template", None), getattr(data, "tokenizer", None)
        if stage == "fit" and self.trainer.is_global_zero and template is not None and tokenizer is not None:
            tokenizer.save(self.run_dir / "tokenizer.json")
            with replacing(self.run_dir / "template.json") as tmp:
                tmp.write_text(json.dumps(template_record(template), indent=2), encoding="utf-8")
        longest = getattr(data, "max_length", None)
        if isinstance(longest, int):
            check_fits_context(longest, self.net)

    def train(self, mode: bool = True) -> DPO:
        super().train(mode)
        self.reference.eval()  # never dropout in the reference: its log-probabilities are fixed
        return self

    def scores(self, batch: Batch) -> tuple[DPOLoss, Tensor, Tensor, Tensor]:
        """The loss's output, and per row the policy's and the reference's summed log-probability
        of the response and its token count (rows: the B chosen, then the B rejected)."""
        ids, mask = batch["ids"], batch["mask"]
        policy, count = sequence_logprob(self.net(ids), ids, mask)
        with torch.no_grad():
            reference, _ = sequence_logprob(self.reference(ids), ids, mask)
        # IPO's target margin does not depend on length: it compares per-token means (as TRL does).
        scale = count.clamp(min=1) if self.loss_type == "ipo" else torch.ones_like(count)
        (chosen, rejected), (ref_chosen, ref_rejected) = (
            (policy / scale).chunk(2),
            (reference / scale).chunk(2),
        )
        out = dpo_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            loss_type=self.loss_type,
            rpo_alpha=self.rpo_alpha,
            chosen_nll=mean_token_nll(policy.chunk(2)[0], count.chunk(2)[0]) if self.rpo_alpha else None,
        )
        return out, policy.detach(), reference, count

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:  # type: ignore[override]
        out, _, _, _ = self.scores(batch)
        if is_logging_step(self.trainer, self.trainer.global_step + 1):
            self.log("train/loss", out.loss)
            rewards = (
                out.chosen_rewards.mean(),
                out.rejected_rewards.mean(),
                out.margins.mean(),
                out.accuracy,
            )
            for name, value in zip(REWARDS, rewards, strict=True):
                self.log(f"train/rewards/{name}", value)
        return out.loss

    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(len(SUMS), dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:  # type: ignore[override]
        out, policy, reference, count = self.scores(batch)
        (chosen, rejected), (ref_chosen, ref_rejected) = policy.chunk(2), reference.chunk(2)
        pairs = chosen.numel()
        values = (
            pairs,
            out.loss * pairs,
            out.chosen_rewards.sum(),
            out.rejected_rewards.sum(),
            out.accuracy * pairs,
            (chosen > rejected).sum(),
            (ref_chosen > ref_rejected).sum(),
            chosen.sum(),
            ref_chosen.sum(),
            count.chunk(2)[0].sum(),
        )
        self._sums += torch.stack(
            [torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values]
        )

    def on_validation_epoch_end(self) -> None:
        # Sums over every pair of every DDP rank, then the means: the same numbers on every rank.
        sums = dict(zip(SUMS, self.trainer.strategy.reduce(self._sums, reduce_op="sum"), strict=True))
        pairs = float(sums["pairs"])
        if pairs == 0:
            return
        chosen, rejected = float(sums["chosen"]) / pairs, float(sums["rejected"]) / pairs
        metrics = {
            "val/loss": float(sums["loss"]) / pairs,
            "val/rewards/chosen": chosen,
            "val/rewards/rejected": rejected,
            "val/rewards/margin": chosen - rejected,
            "val/rewards/accuracy": float(sums["accuracy"]) / pairs,
            "val/preference_accuracy": float(sums["preference"]) / pairs,
            "val/preference_accuracy_before": float(sums["preference_before"]) / pairs,
            "val/chosen_nll": -float(sums["chosen_logp"]) / float(sums["chosen_tokens"]),
            "val/chosen_nll_before": -float(sums["chosen_logp_before"]) / float(sums["chosen_tokens"]),
        }
        for name, value in metrics.items():
            self.log(name, value)

    def test_step(self, batch: Batch, batch_idx: int) -> None:  # type: ignore[override]
        raise ArgumentError("test", "experiment=dpo reports on its validation pairs", "use test=false")

    def batch_tokens(self, batch: Batch) -> int:  # type: ignore[override]
        return batch["ids"].numel()

    def batch_flops(self, batch: Batch) -> float | None:  # type: ignore[override]
        """The policy's forward and backward, plus the reference's forward (a third more)."""
        flops = super().batch_flops((batch["ids"],))  # type: ignore[arg-type]
        return None if flops is None else flops * 4 / 3

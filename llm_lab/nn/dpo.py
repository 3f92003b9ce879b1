"""Direct Preference Optimization (Rafailov et al. 2023) and its variants, from their formulas.

RLHF fits a reward model to human preferences, then maximises that reward with a KL leash to a
frozen reference model π_ref. DPO's observation (Rafailov et al. 2023, §4): the optimum of that
problem is π*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β), so the reward is a log-ratio,
r(x, y) = β·log π(y|x)/π_ref(y|x) (+ a term of x alone, which cancels in a pair). Put into the
Bradley–Terry model of "y_w preferred to y_l", the reward model's likelihood becomes a loss on the
policy itself (their eq. 7):

    L_DPO = −log σ( β·log π(y_w|x)/π_ref(y_w|x) − β·log π(y_l|x)/π_ref(y_l|x) )

Every quantity is a *sequence* log-probability: the sum over the response's tokens of
log π(token | prompt, earlier tokens) (:func:`sequence_logprob`).

Variants (``loss_type``):

- ``sigmoid`` with ``label_smoothing`` ε > 0 — conservative DPO (Mitchell 2023, "A note on DPO with
  noisy preferences"): if a label is flipped with probability ε, the expected loss is
  (1−ε)·L(h) + ε·L(−h), with h the β-scaled margin above. ε = 0 is eq. 7.
- ``ipo`` — Identity Preference Optimisation (Azar et al. 2023, eq. 17): the squared distance of the
  log-ratio margin h/β to 1/(2β), (h/β − 1/(2β))², which keeps pulling the margin towards a finite
  target instead of pushing it to infinity when preferences are deterministic. As in TRL (checked
  with the IPO authors, their comment says), the log-probabilities fed to it are per-token means,
  so the target does not depend on the response's length.

``rpo_alpha`` α > 0 adds α times the chosen responses' negative log-likelihood per token
(:func:`mean_token_nll`) to any of them — RPO, the DPO+NLL loss of Pang et al. 2024 ("Iterative
Reasoning Preference Optimization", §2; TRL's ``loss_type=["sigmoid", "sft"]`` with
``loss_weights=[1, α]``, its former ``rpo_alpha``): DPO sees only the difference of the two
log-ratios and may lower both responses' likelihood; the NLL term holds the chosen one up. As in
TRL, α weighs the NLL term (the paper weighs the DPO term, with α = 1, where the two agree) and the
NLL is the mean over every chosen token of the batch (the paper divides each sequence's by its
own length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llm_lab.errors import ArgumentError

LOSS_TYPES = ("sigmoid", "ipo")


@dataclass
class DPOLoss:
    """The batch's mean loss, and per pair the implicit rewards β·log π/π_ref of each response."""

    loss: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> Tensor:
        """Share of pairs whose chosen response gets the higher implicit reward."""
        return (self.chosen_rewards > self.rejected_rewards).float().mean()


def check_dpo_arguments(
    beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid", rpo_alpha: float = 0.0
) -> None:
    """Refuse impossible settings by their argument's name."""
    if not beta > 0:
        raise ArgumentError("beta", f"{beta} is not positive", "use a positive β, e.g. 0.1 (the paper's)")
    if not 0 <= label_smoothing < 0.5:
        raise ArgumentError(
            "label_smoothing",
            f"{label_smoothing} is not in [0, 0.5)",
            "it is the probability that a label is flipped: 0 (plain DPO) up to below 0.5",
        )
    if loss_type not in LOSS_TYPES:
        raise ArgumentError("loss_type", f"unknown loss {loss_type!r}", f"use one of {', '.join(LOSS_TYPES)}")
    if loss_type == "ipo" and label_smoothing:
        raise ArgumentError("label_smoothing", "IPO has no label smoothing", "use label_smoothing=0 with ipo")
    if not rpo_alpha >= 0:
        raise ArgumentError(
            "rpo_alpha", f"{rpo_alpha} < 0", "use 0 (no NLL term) or a positive weight, e.g. 1"
        )


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    rpo_alpha: float = 0.0,
    chosen_nll: Tensor | None = None,
) -> DPOLoss:
    """The DPO loss (eq. 7), cDPO's or IPO's, from the policy's and the reference's log-probabilities
    of the chosen and rejected responses, each of shape (B,); with ``rpo_alpha``, plus that many
    times ``chosen_nll`` (:func:`mean_token_nll` of the chosen responses: RPO)."""
    check_dpo_arguments(beta, label_smoothing, loss_type, rpo_alpha)
    chosen_logratio = policy_chosen - reference_chosen
    rejected_logratio = policy_rejected - reference_rejected
    margin = chosen_logratio - rejected_logratio  # log-ratio of the pair, h/β
    if loss_type == "sigmoid":
        # −log σ(βh): logsigmoid is exact where σ underflows (a very wrong pair).
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(
            -beta * margin
        )
    else:
        losses = (margin - 1 / (2 * beta)) ** 2
    loss = losses.mean()
    if rpo_alpha:
        if chosen_nll is None:
            raise ArgumentError(
                "chosen_nll", "rpo_alpha > 0 adds the chosen NLL, and none is given", "pass it"
            )
        loss = loss + rpo_alpha * chosen_nll
    return DPOLoss(loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach())


def mean_token_nll(logprob: Tensor, tokens: Tensor) -> Tensor:
    """The responses' negative log-likelihood per token over the whole batch, from their summed
    log-probabilities (B,) and token counts (B,) (:func:`sequence_logprob`'s)."""
    return -logprob.sum() / tokens.sum().clamp(min=1)


def sequence_logprob(logits: Tensor, ids: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of log p(token) over the response tokens of each row, and how many tokens that is.

    ``logits`` (B, T, V) are a causal model's outputs for ``ids`` (B, T); ``response_mask`` (B, T)
    is true at the tokens to score — the response's, not the prompt's nor the padding's. Position
    t's logits predict token t + 1, so the first token of a row is never scored. The softmax runs
    in float32."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = ids[:, 1:]
    mask = response_mask[:, 1:].to(logprobs.dtype)
    token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logprobs * mask).sum(-1), mask.sum(-1)

"""The DPO loss (llm_lab/nn/dpo.py): the paper's formulas written again in numpy, TRL's DPOTrainer on
the same tiny model and pairs, and the direction its gradient pushes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_lab.errors import ArgumentError
from llm_lab.nn.dpo import dpo_loss, mean_token_nll, sequence_logprob


def reference_losses(pc, pr, rc, rr, beta, eps, loss_type):
    """Eq. 7 of Rafailov et al. (2023) with Mitchell's label smoothing, or eq. 17 of Azar et al.
    (2023), per pair, in float64 numpy: log σ(x) = −log(1 + e^(−x))."""
    h = (pc - rc) - (pr - rr)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return (1 - eps) * np.log1p(np.exp(-beta * h)) + eps * np.log1p(np.exp(beta * h))


@pytest.mark.parametrize(
    ("beta", "eps", "loss_type"), [(0.1, 0.0, "sigmoid"), (0.5, 0.2, "sigmoid"), (0.1, 0.0, "ipo")]
)
def test_the_loss_is_the_papers_formula(beta, eps, loss_type):
    rng = np.random.default_rng(0)
    logps = [rng.normal(-40, 10, size=64) for _ in range(4)]
    out = dpo_loss(*(torch.tensor(x) for x in logps), beta=beta, label_smoothing=eps, loss_type=loss_type)
    expected = reference_losses(*logps, beta, eps, loss_type).mean()
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(out.chosen_rewards.numpy(), beta * (logps[0] - logps[2]), rtol=1e-12)
    np.testing.assert_allclose(out.rejected_rewards.numpy(), beta * (logps[1] - logps[3]), rtol=1e-12)
    margins = beta * ((logps[0] - logps[2]) - (logps[1] - logps[3]))
    assert out.accuracy.item() == pytest.approx((margins > 0).mean())


def test_the_gradient_raises_the_chosen_and_lowers_the_rejected_log_probability():
    chosen = torch.tensor([-30.0, -12.0], requires_grad=True)
    rejected = torch.tensor([-25.0, -14.0], requires_grad=True)
    reference = torch.tensor([-28.0, -13.0])
    for loss_type in ("sigmoid", "ipo"):
        chosen.grad = rejected.grad = None
        dpo_loss(chosen, rejected, reference, reference, loss_type=loss_type).loss.backward()
        assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent: chosen up, rejected down


def test_sequence_logprob_scores_only_the_response_tokens():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    ids = torch.randint(0, 11, (3, 7))
    mask = torch.tensor(
        [[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 0]], dtype=torch.bool
    )
    total, count = sequence_logprob(logits, ids, mask)
    # The book's way (Raschka ch. 7): cross-entropy with the unscored targets set to -100.
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    expected = -F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none").sum(-1)
    torch.testing.assert_close(total, expected.float(), rtol=1e-6, atol=1e-6)
    assert count.tolist() == [3, 6, 1]


def test_impossible_settings_name_their_argument():
    x = torch.zeros(2)
    for kwargs, arg in [
        ({"beta": 0.0}, "beta"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"loss_type": "hinge"}, "loss_type"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing"),
        ({"rpo_alpha": -1.0}, "rpo_alpha"),
        ({"rpo_alpha": 1.0}, "chosen_nll"),  # RPO without the chosen answers' NLL
    ]:
        with pytest.raises(ArgumentError) as err:
            dpo_loss(x, x, x, x, **kwargs)
        assert err.value.arg == arg


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl is not installed (pip install trl)")
def test_the_loss_equals_trls_on_the_same_model_and_pairs(tmp_path):
    """TRL's DPOTrainer tokenizes three pairs and computes its loss with a tiny random GPT-2 as the
    policy and another as the reference; the lab's :func:`sequence_logprob` and :func:`dpo_loss` on
    the same batch, model and masks give the same number (float32, 1e-5)."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    vocab = {chr(i): i - 32 for i in range(32, 127)} | {"<eos>": 95, "<pad>": 96}
    characters = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    characters.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=characters, eos_token="<eos>", pad_token="<pad>")
    config = GPT2Config(
        vocab_size=97,
        n_positions=64,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )
    torch.manual_seed(0)
    policy, reference = GPT2LMHeadModel(config).eval(), GPT2LMHeadModel(config).eval()
    pairs = Dataset.from_dict(
        {
            "prompt": ["Q: a?", "Q: bb?", "What is 2+2?"],
            "chosen": [" yes", " no!", " 4."],
            "rejected": [" maybe", " x", " five, I think"],
        }
    )
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=3)
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=pairs, processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])

    def scored(model):  # the lab's: summed log-probabilities and token counts, [chosen; rejected] rows
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sequence_logprob(logits, batch["input_ids"], batch["completion_mask"].bool())

    (policy_sums, counts), (reference_sums, _) = scored(policy), scored(reference)
    # RPO (rpo_alpha): TRL adds its "sft" loss, weighted, to the preference loss.
    for beta, loss_type, alpha in [
        (0.1, "sigmoid", 0),
        (0.5, "sigmoid", 0),
        (0.1, "ipo", 0),
        (0.1, "sigmoid", 0.7),
    ]:
        types, weights = ([loss_type, "sft"], [1.0, alpha]) if alpha else ([loss_type], [1.0])
        trainer.beta, trainer.loss_types, trainer.loss_weights = beta, types, weights
        with torch.no_grad():
            theirs = trainer.compute_loss(trainer.model, batch)
        scale = counts if loss_type == "ipo" else 1  # TRL's IPO takes per-token means, as ours does
        ours = dpo_loss(
            *(policy_sums / scale).chunk(2),
            *(reference_sums / scale).chunk(2),
            beta=beta,
            loss_type=loss_type,
            rpo_alpha=alpha,
            chosen_nll=mean_token_nll(policy_sums.chunk(2)[0], counts.chunk(2)[0]),
        )
        assert ours.loss.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6), (beta, loss_type, alpha)

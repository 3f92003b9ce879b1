"""The centre-token objective: fill in a masked token from the words on both sides.

A model whose attention sees the whole window (no causal mask) cannot be trained to predict the
next token: the answer is in its input. It can instead be asked for a token hidden behind a
``[MASK]`` id, as in BERT's masked language model (Devlin et al. 2019, §3.1). Here the hidden
token is always the centre of the window, which makes the task CBoW's (Mikolov et al. 2013a, §3.1)
with attention in place of averaging -- and makes CBoW vectors a natural initialisation.

Everything else (logging, perplexity, optimizer groups) is :class:`~llm_lab.lit.lm.NextTokenLM`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_lab.lit.lm import Batch, NextTokenLM


class MaskedTokenLM(NextTokenLM):
    """Cross-entropy of the centre token of each window, which the net sees as ``[MASK]``.

    The net is built for ``vocab_size + 1`` ids: id ``vocab_size`` is ``[MASK]``, a learned
    embedding of its own. It is also handed the tokenizer, so that it can look words up (e.g. to
    initialise its embeddings from word vectors). Logs the same metrics as ``NextTokenLM``; their
    "token" is the masked one.
    """

    requires_causal = False  # the masked token is hidden in the input itself
    extra_ids = 1  # id vocab_size is [MASK]
    net_takes_tokenizer = True  # e.g. to start its embeddings from a CBoW run's vectors.txt

    @property
    def mask_id(self) -> int:
        return int(self.hparams["vocab_size"])

    def mask_centre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(B, T) ids → (ids with the centre replaced by [MASK], the centre ids, its position)."""
        centre = x.shape[1] // 2
        masked = x.clone()
        masked[:, centre] = self.mask_id
        return masked, x[:, centre], centre

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy of the masked centre tokens, and how many there were."""
        masked, target, centre = self.mask_centre(batch[0])
        logits = self.net(masked)[:, centre]
        return F.cross_entropy(logits.float(), target), target.numel()

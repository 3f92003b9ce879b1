"""Continuous Bag-of-Words (Mikolov et al. 2013a, "Efficient Estimation of Word Representations").

The mean of the context words' *input* vectors predicts the centre word through *output* vectors.
Two objectives:

- ``softmax``: full softmax over the vocabulary — exact, O(V) per example.
- ``negative_sampling`` (Mikolov et al. 2013b, §2.2): tell the true centre from k noise words drawn
  from the unigram distribution raised to 3/4; O(k) per example. For one example with hidden h,
  true output vector u_o and noise vectors u_1..u_k:

      loss = -log σ(u_o · h) - Σ_i log σ(-u_i · h)

After training, the input vectors are the word vectors (what word2vec writes out).

Two ways to train the same model:

- ``forward`` gives the loss, autograd its gradients, and any ``torch.optim`` optimizer updates the
  tables: the readable version, and what ``optimizer=adamw`` trains.
- ``sgd_step`` is word2vec's own update (word2vec.c, and gensim's ``train_batch_cbow``), written out
  without autograd: plain SGD that touches only the rows of the batch's words. The tables are a
  vocabulary × dimension each, so a dense gradient (and an optimizer visiting every row) costs far
  more than the handful of rows an example changes; this is what makes CBoW train at word2vec's pace.
  ``tests/test_cbow.py`` pins it to autograd's gradients of ``forward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llm_lab.atomic import replacing
from llm_lab.errors import ArgumentError, DataError

LOSSES = ("negative_sampling", "softmax")


class CBoW(nn.Module):
    """CBoW word2vec. Context rows are padded with id ``vocab_size`` (left out of the mean).

    Trained by autograd (``forward``: dense gradients of both tables, any ``torch.optim`` optimizer)
    or by word2vec's own sparse SGD (``sgd_step``).
    """

    noise_probs: torch.Tensor
    noise_table: torch.Tensor

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 100,
        loss: str = "negative_sampling",
        negatives: int = 5,
        noise_counts: Sequence[int] | None = None,
        noise_power: float = 0.75,
        noise_table_size: int = 1 << 20,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ArgumentError("embed_dim", f"{embed_dim} < 1", "use a positive dimension")
        if loss not in LOSSES:
            raise ArgumentError("loss", f"unknown loss {loss!r}", f"use one of {LOSSES}")
        if loss == "negative_sampling" and negatives < 1:
            raise ArgumentError("negatives", f"{negatives} < 1", "use e.g. 5")
        self.vocab_size, self.loss, self.negatives = vocab_size, loss, negatives
        # An EmbeddingBag gathers and averages the context rows in one fused operation, leaving
        # the padding id out of the mean (and out of the gradient).
        self.in_embed = nn.EmbeddingBag(vocab_size + 1, embed_dim, mode="mean", padding_idx=vocab_size)
        self.out_embed = nn.Embedding(vocab_size, embed_dim)
        # word2vec.c's initialisation: small uniform input vectors, zero output vectors.
        nn.init.uniform_(self.in_embed.weight, -0.5 / embed_dim, 0.5 / embed_dim)
        with torch.no_grad():
            self.in_embed.weight[vocab_size].zero_()
        nn.init.zeros_(self.out_embed.weight)
        counts = torch.ones(vocab_size) if noise_counts is None else torch.as_tensor(noise_counts)
        probs = noise_distribution(counts, noise_power)
        self.register_buffer("noise_probs", probs, persistent=False)
        self.register_buffer("noise_table", unigram_table(probs, noise_table_size), persistent=False)

    def hidden(self, context: torch.Tensor) -> torch.Tensor:
        """Mean of the non-padding context vectors: (B, C) ids → (B, D)."""
        return self.in_embed(context)

    def draw_noise(self, batch_size: int) -> torch.Tensor:
        """(B, k) noise words: uniform positions in the unigram table (word2vec.c's trick, far
        cheaper than sampling a categorical distribution over the vocabulary at every step)."""
        device = self.noise_table.device
        slots = torch.randint(len(self.noise_table), (batch_size, self.negatives), device=device)
        return self.noise_table[slots]

    def targets(self, centre: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """(B, 1+k) output words of each example: row i is [centre_i, noise_i1..noise_ik]."""
        noise = self.draw_noise(centre.numel()) if noise is None else noise
        return torch.cat([centre.unsqueeze(1), noise], dim=1)

    def forward(
        self, context: torch.Tensor, centre: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss over the batch (``noise``: the (B, k) noise words, drawn when not given)."""
        h = self.hidden(context)
        if self.loss == "softmax":
            return F.cross_entropy(h @ self.out_embed.weight.T, centre)
        targets = self.targets(centre, noise)
        # One gather for the true word and its k noise words.
        u = self.out_embed.weight.index_select(0, targets.flatten()).view(*targets.shape, -1)
        scores = (u * h.unsqueeze(1)).sum(-1)  # (B, 1+k) dot products u·h
        return negative_sampling_loss(scores)

    @torch.no_grad()
    def sgd_step(
        self, context: torch.Tensor, centre: torch.Tensor, lr: float, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One step of word2vec's SGD on a batch; returns the batch's mean loss before the step.

        For each example, with hidden h (the mean of the context vectors) and output words j
        (label t_j = 1 for the centre, 0 for the noise words), word2vec.c computes

            g_j = lr · (t_j − σ(u_j·h))      (minus lr times ∂loss/∂(u_j·h))
            u_j += g_j · h                   (an SGD step on the output vector)
            e    = Σ_j g_j · u_j             (minus lr times ∂loss/∂h)
            w   += e    for every context word w

        The last line adds e itself, not the gradient through the mean (e / number of context
        words): word2vec.c and gensim (``cbow_mean=1``) do so, and the input vectors learn as fast
        as if h were their sum. With the full softmax, g is lr · (one-hot − softmax) over the whole
        vocabulary. Every example of the batch reads the tables as they were before the step, and
        the updates of a word that occurs several times add up: the step is SGD on the batch's
        summed loss, and only the rows of the batch's words are touched.
        """
        w_in, w_out = self.in_embed.weight, self.out_embed.weight
        h = self.hidden(context)  # (B, D)
        if self.loss == "softmax":
            logits = h @ w_out.T
            loss = F.cross_entropy(logits, centre)
            g = torch.softmax(logits, dim=-1).neg_()
            g[torch.arange(len(centre)), centre] += 1
            g *= lr
            e = g @ w_out
            w_out += g.T @ h
        else:
            targets = self.targets(centre, noise)
            u = w_out[targets]  # (B, 1+k, D)
            scores = (u * h.unsqueeze(1)).sum(-1)
            loss = negative_sampling_loss(scores)
            g = torch.sigmoid(scores).neg_()
            g[:, 0] += 1
            g *= lr
            e = (g.unsqueeze(-1) * u).sum(1)
            # index_put_ with accumulate=True adds repeated rows up (index_add_ is far slower on CPU).
            w_out.index_put_(
                (targets.flatten(),), (g.unsqueeze(-1) * h.unsqueeze(1)).flatten(0, 1), accumulate=True
            )
        rows = e.unsqueeze(1).expand(-1, context.shape[1], -1)
        w_in.index_put_((context.flatten(),), rows.flatten(0, 1), accumulate=True)
        w_in[self.vocab_size].zero_()  # the padding row took the padding slots' share: undo it
        return loss

    @property
    def word_vectors(self) -> torch.Tensor:
        """The learned vectors, one row per vocabulary id (padding row dropped)."""
        return self.in_embed.weight[: self.vocab_size].detach()


def mean_pair_cosine(vectors: np.ndarray) -> float:
    """The mean cosine similarity between two different words drawn at random (all pairs i ≠ j).

    Near 0, the vectors spread in every direction; near 1, they share one dominant direction and
    every word looks like every other (undertrained word2vec on a small corpus; Mu & Viswanath
    2018, "All-but-the-Top", §2). Exact, in one pass: with unit vectors n_i, the sum over all
    ordered pairs of n_i·n_j is |Σ n_i|² − N.
    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float64)
    n = len(unit)
    if n < 2:
        return 0.0
    total = unit.sum(0)
    return float((total @ total - (unit * unit).sum()) / (n * (n - 1)))


def noise_distribution(counts: torch.Tensor, power: float = 0.75) -> torch.Tensor:
    """Unigram counts raised to ``power`` and normalised (Mikolov et al. 2013b, §2.2)."""
    weights = counts.double().clamp_min(0) ** power
    return (weights / weights.sum()).float()


def unigram_table(probs: torch.Tensor, size: int) -> torch.Tensor:
    """A table of ``size`` word ids in which word w fills a share ``probs[w]`` of the slots.

    Drawing a uniform slot then draws w with probability ``probs[w]`` (up to 1/size): word2vec.c's
    negative-sampling table. Slot i holds the word whose cumulative-probability range covers
    (i + 0.5) / size.
    """
    cumulative = torch.cumsum(probs.double(), 0)
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    return torch.searchsorted(cumulative, centres).clamp_max(len(probs) - 1)


def negative_sampling_loss(scores: torch.Tensor) -> torch.Tensor:
    """Scores (B, 1+k): column 0 is u_o·h for the true word, the rest u_i·h for the noise words.

    Returns the mean over B of −log σ(u_o·h) − Σ_i log σ(−u_i·h).
    """
    return -(F.logsigmoid(scores[:, 0]) + F.logsigmoid(-scores[:, 1:]).sum(-1)).mean()


def save_word2vec_text(path: str | Path, words: Sequence[str], vectors: np.ndarray) -> None:
    """Write the word2vec text format: a ``count dim`` header, then ``word v1 v2 …`` per line.

    Written to a temporary file and renamed, so a crash never leaves half a file behind.
    """
    with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors, strict=True):
            f.write(word + " " + " ".join(f"{x:.6f}" for x in row) + "\n")


def load_word2vec_text(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a word2vec text file (ours or gensim's) → (words, vectors of shape (N, D)).

    Every way the file can be unusable is a DataError that names the file and the line: not text,
    a bad header, a row without ``dim`` numbers, a value that is not a finite number (NaN vectors
    would silently poison the model that starts from them), or fewer rows than the header says.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"vectors file {path} does not exist")
    words, rows = [], []
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().split()
            if len(header) != 2 or not all(h.isdigit() for h in header):
                shown = " ".join(header)[:60]
                raise DataError(
                    f"{path}: not a word2vec text file (first line {shown!r}, expected '<count> <dim>')"
                )
            count, dim = int(header[0]), int(header[1])
            for n, line in enumerate(f, start=2):
                parts = line.rstrip("\n").split(" ")
                if len(parts) != dim + 1:
                    raise DataError(
                        f"{path}:{n}: expected a word and {dim} numbers, got {len(parts) - 1} fields"
                    )
                try:
                    row = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise DataError(
                        f"{path}:{n}: the vector of {parts[0][:30]!r} holds a non-number"
                    ) from None
                if not np.isfinite(row).all():
                    raise DataError(f"{path}:{n}: the vector of {parts[0][:30]!r} holds NaN or infinity")
                words.append(parts[0])
                rows.append(row)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a word2vec text file (not UTF-8 text, byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror})") from None
    if len(words) != count:
        raise DataError(f"{path}: header says {count} words, file has {len(words)} (truncated?)")
    return words, np.stack(rows) if rows else np.zeros((0, dim), np.float32)

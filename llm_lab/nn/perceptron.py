"""Rosenblatt's perceptron, trained by its own mistake-driven rule (no autograd, no optimizer).

Rosenblatt (1958) computes ``ŷ = sign(w·x + b)`` and, on each example it gets wrong, moves the
hyperplane towards it: ``w ← w + η·y·x``, ``b ← b + η·y`` with labels ``y ∈ {-1, +1}``.
Novikoff (1962) proved that if some unit vector ``u`` separates the data with margin ``γ``
(``y·u·x' ≥ γ`` for every augmented point ``x' = (x, 1)``) and ``R = max ‖x'‖``, the rule makes at
most ``(R/γ)²`` mistakes from ``w = 0``, whatever ``η`` and the order of the examples. On data
no line separates, such as XOR (Minsky & Papert 1969), it never stops making mistakes. See
Raschka, "Python Machine Learning", ch. 2, and Goodfellow et al. 2016, §6.1.

The weights are ``nn.Module`` buffers, not parameters: autograd never sees them, while ``.to()``,
``state_dict()`` and Lightning checkpoints still work.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError


def to_signed(y: Tensor) -> Tensor:
    """Map class ids {0, 1} to the perceptron's labels {-1, +1}."""
    if y.numel() and not bool(((y == 0) | (y == 1)).all()):
        raise ArgumentError(
            "y",
            "the perceptron is a binary classifier: labels must be 0 or 1",
            "map the two classes to 0 and 1",
        )
    return 2 * y.to(torch.int64) - 1


class Perceptron(nn.Module):
    """A single linear threshold unit with a weight vector and a bias, both starting at zero.

    Args:
        in_features: length of an input vector.
        dtype: floating type of the weights.
    """

    weight: Tensor
    bias: Tensor

    def __init__(self, in_features: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if in_features < 1:
            raise ArgumentError(
                "in_features", f"must be >= 1, got {in_features}", "use the number of input features"
            )
        # Starting from zero is what Novikoff's bound assumes.
        self.register_buffer("weight", torch.zeros(in_features, dtype=dtype))
        self.register_buffer("bias", torch.zeros((), dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """The activation ``w·x + b`` of each row of ``x`` (N, D) → (N,)."""
        return x.to(self.weight.dtype) @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """Class ids in {0, 1}: 1 where ``w·x + b > 0``."""
        return (self(x) > 0).to(torch.int64)

    def update(self, x: Tensor, y: Tensor, lr: float = 1.0) -> int:
        """Show the examples one by one, updating on each mistake; returns the number of mistakes.

        ``y`` holds class ids {0, 1}; ``lr`` is the rule's ``η``. From ``w = 0``, η only scales
        ``w``: it never changes which examples are misclassified. A point exactly on the
        hyperplane counts as a mistake, so that learning can start from ``w = 0``.
        """
        if not lr > 0:
            raise ArgumentError("lr", f"the perceptron's learning rate must be > 0, got {lr}", "e.g. 1.0")
        signed = to_signed(y).to(self.weight.dtype)
        x = x.to(self.weight.dtype)
        mistakes = 0
        # The rule is online: each update changes the hyperplane the next example sees.
        for x_i, y_i in zip(x, signed, strict=True):
            if y_i * (x_i @ self.weight + self.bias) <= 0:
                self.weight += lr * y_i * x_i
                self.bias += lr * y_i
                mistakes += 1
        return mistakes

    def fit(self, x: Tensor, y: Tensor, max_epochs: int, lr: float = 1.0) -> list[int]:
        """Sweep until an epoch makes no mistakes or ``max_epochs`` pass; mistakes per epoch."""
        history: list[int] = []
        for _ in range(max_epochs):
            history.append(self.update(x, y, lr))
            if history[-1] == 0:
                break
        return history

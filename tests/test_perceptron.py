"""Rosenblatt's perceptron (llm_lab/nn/perceptron.py) against Novikoff's convergence theorem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_lab.data.toy2d import make_toy2d
from llm_lab.errors import ArgumentError
from llm_lab.nn.perceptron import Perceptron, to_signed

# The blobs of make_toy2d("blobs", num_classes=2) are centred at (±BLOB_RADIUS, 0), so the line
# x0 = 0 separates them. The test moves the data by SHIFT so that the bias has to be learned too:
# the known separating hyperplane becomes x0 - SHIFT[0] = 0, i.e. w* = (1, 0), b* = -SHIFT[0].
SHIFT = np.array([3.0, -1.0], dtype=np.float32)
MIN_DISTANCE = 0.3  # points closer than this to the known hyperplane are dropped


def separable_blobs(seed: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Points, labels, and Novikoff's R and γ for the known hyperplane ``x0 = SHIFT[0]``.

    Class 0 lies on the x0 > 0 side before the shift; the perceptron's label +1 is class 1, so the
    hyperplane separating in the perceptron's convention is ``u = -(1, 0, -SHIFT[0]) / ‖·‖``.
    """
    x, y = make_toy2d("blobs", n_samples=300, noise=0.8, seed=seed, num_classes=2)
    # Wide noise puts some points on the wrong side: keep only those on their class's side, at
    # least MIN_DISTANCE from the line, which makes the set separable with a known margin.
    side = np.where(y == 0, 1.0, -1.0)
    keep = side * x[:, 0] >= MIN_DISTANCE
    x, y = x[keep] + SHIFT, y[keep]
    augmented = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    u = -np.array([1.0, 0.0, -SHIFT[0]])
    u /= np.linalg.norm(u)
    signed = 2.0 * y - 1
    margins = signed * (augmented @ u)
    gamma = float(margins.min())
    assert gamma > 0, "the known hyperplane must separate the generated data"
    radius = float(np.linalg.norm(augmented, axis=1).max())
    return torch.from_numpy(x), torch.from_numpy(y), radius, gamma


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lr", [1.0, 0.05])
def test_converges_within_novikoffs_mistake_bound(seed: int, lr: float) -> None:
    x, y, radius, gamma = separable_blobs(seed)
    perceptron = Perceptron(in_features=2, dtype=torch.float64)
    history = perceptron.fit(x, y, max_epochs=1000, lr=lr)
    # Converged: the last sweep made no mistake, so every training point is classified correctly.
    assert history[-1] == 0
    assert torch.equal(perceptron.predict(x), y)
    # Novikoff (1962): the total number of mistakes (updates) is at most (R/γ)².
    assert sum(history) <= (radius / gamma) ** 2
    # The set is not trivial: the perceptron did have to learn.
    assert sum(history) >= 1


def test_learning_rate_does_not_change_the_mistakes_from_zero() -> None:
    """From w = 0 every update is a multiple of η, so the sign of w·x + b never depends on η."""
    x, y, _, _ = separable_blobs(0)
    histories = []
    for lr in (1.0, 0.01, 7.5):
        perceptron = Perceptron(in_features=2, dtype=torch.float64)
        histories.append(perceptron.fit(x, y, max_epochs=1000, lr=lr))
    assert histories[0] == histories[1] == histories[2]


def test_one_update_is_the_rule() -> None:
    """A single mistake on (x, y=+1) from w = 0 gives w = η·x, b = η (Rosenblatt 1958)."""
    perceptron = Perceptron(in_features=3, dtype=torch.float64)
    x = torch.tensor([[0.5, -2.0, 1.5]], dtype=torch.float64)
    assert perceptron.update(x, torch.tensor([1]), lr=0.1) == 1
    torch.testing.assert_close(perceptron.weight, 0.1 * x[0], rtol=0, atol=1e-15)
    assert float(perceptron.bias) == pytest.approx(0.1)
    # Now it is right about that point and does not move.
    assert perceptron.update(x, torch.tensor([1]), lr=0.1) == 0


def test_never_separates_xor() -> None:
    """No line separates XOR (Minsky & Papert 1969): every epoch keeps making mistakes."""
    x, y = map(torch.from_numpy, make_toy2d("xor", n_samples=200, noise=0.0, seed=0))
    perceptron = Perceptron(in_features=2)
    history = perceptron.fit(x, y, max_epochs=100)
    assert len(history) == 100 and min(history) > 0
    # A line gets at most three of the four quadrants right.
    accuracy = (perceptron.predict(x) == y).float().mean().item()
    assert accuracy <= 0.8


def test_rejects_non_binary_labels_and_bad_learning_rate() -> None:
    with pytest.raises(ArgumentError, match="binary"):
        to_signed(torch.tensor([0, 1, 2]))
    with pytest.raises(ArgumentError) as err:
        Perceptron(2).update(torch.zeros(1, 2), torch.tensor([1]), lr=0.0)
    assert err.value.arg == "lr"
    with pytest.raises(ArgumentError) as err:
        Perceptron(0)
    assert err.value.arg == "in_features"

"""A multi-layer perceptron with its forward and backward passes written out by hand.

Each layer keeps what its forward pass saw and turns ``∂L/∂output`` into ``∂L/∂input`` (the chain
rule, Rumelhart, Hinton & Williams 1986; Goodfellow et al. 2016, §6.5), storing ``∂L/∂W`` and
``∂L/∂b`` for the parameters it owns. Training is plain mini-batch SGD on those gradients. Tensors
are torch tensors used as arrays: nothing has ``requires_grad``, so autograd plays no part, and the
gradient test can compare against it in float64.

Like the perceptron, weights are ``nn.Module`` buffers so that ``.to()`` and ``state_dict()`` work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from llm_lab.errors import ArgumentError

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def check_activation(name: str) -> str:
    """Return ``name`` if it is one of ``ACTIVATIONS``, else raise an ArgumentError listing them."""
    if name not in ACTIVATIONS:
        raise ArgumentError(
            "activation", f"unknown activation {name!r}", f"choose one of {list(ACTIVATIONS)}"
        )
    return name


def check_hidden_sizes(hidden_sizes: Sequence[int]) -> list[int]:
    """The hidden widths as a list; an ArgumentError if one is not a positive integer."""
    sizes = list(hidden_sizes)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ArgumentError(
                "hidden_sizes", f"every hidden size must be a positive integer, got {sizes}", "e.g. [64, 64]"
            )
    return sizes


class Dense(nn.Module):
    """``y = x W + b`` with ``W`` of shape (in, out), and its hand-written backward pass.

    Initialisation keeps the variance of activations and gradients roughly constant across layers.
    For tanh and sigmoid, Glorot & Bengio (2010, eq. 16) draw ``W ~ U(-a, a)`` with
    ``a = sqrt(6 / (fan_in + fan_out))``. ReLU zeroes half its inputs, so He et al. (2015, §2.2)
    double the variance: ``W ~ N(0, 2 / fan_in)``. Biases start at zero.
    """

    weight: Tensor
    bias: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init: str,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        shape = (in_features, out_features)
        if init == "he":
            weight = torch.randn(shape, generator=generator, dtype=dtype) * math.sqrt(2 / in_features)
        elif init == "glorot":
            a = math.sqrt(6 / (in_features + out_features))
            weight = (2 * torch.rand(shape, generator=generator, dtype=dtype) - 1) * a
        else:
            raise ArgumentError("init", f"unknown initialisation {init!r}", "use 'he' or 'glorot'")
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype))
        self.grad_weight = torch.zeros_like(weight)
        self.grad_bias = torch.zeros_like(self.bias)
        self._x: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self._x = x
        return x @ self.weight + self.bias

    def backward(self, grad_out: Tensor) -> Tensor:
        """Given ``∂L/∂y`` (N, out), store ``∂L/∂W = xᵀ·∂L/∂y`` and ``∂L/∂b = Σ_n ∂L/∂y``.

        Returns ``∂L/∂x = ∂L/∂y · Wᵀ`` for the layer below.
        """
        assert self._x is not None, "backward before forward"
        self.grad_weight = self._x.T @ grad_out
        self.grad_bias = grad_out.sum(dim=0)
        return grad_out @ self.weight.T


class Activation(nn.Module):
    """An element-wise non-linearity ``a = f(z)``; backward multiplies by ``f'(z)``.

    Each derivative is written in terms of what the forward pass already computed:
    ``σ' = σ(1 - σ)``, ``tanh' = 1 - tanh²``, ``relu' = [z > 0]``.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = check_activation(name)
        self._z: Tensor | None = None
        self._a: Tensor | None = None

    def forward(self, z: Tensor) -> Tensor:
        if self.name == "sigmoid":
            a = 1 / (1 + torch.exp(-z))
        elif self.name == "tanh":
            a = torch.tanh(z)
        else:
            a = torch.clamp(z, min=0)
        self._z, self._a = z, a
        return a

    def backward(self, grad_out: Tensor) -> Tensor:
        assert self._z is not None and self._a is not None, "backward before forward"
        if self.name == "sigmoid":
            derivative = self._a * (1 - self._a)
        elif self.name == "tanh":
            derivative = 1 - self._a**2
        else:
            derivative = (self._z > 0).to(grad_out.dtype)
        return grad_out * derivative


def softmax_cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of softmax(logits) against class ids, and its gradient w.r.t. the logits.

    Subtracting the row maximum before ``exp`` changes nothing mathematically and avoids overflow.
    With ``p = softmax(z)`` the gradient of ``-log p_y`` is ``p - onehot(y)`` (Goodfellow et al.
    2016, §6.2.2.3), divided by N because the loss is a mean.
    """
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
    n = logits.shape[0]
    rows = torch.arange(n)
    loss = -log_probs[rows, targets].mean()
    grad = torch.exp(log_probs)
    grad[rows, targets] -= 1
    return loss, grad / n


class MLPScratch(nn.Module):
    """Dense → activation → … → Dense (logits), trained by hand-written backprop and SGD.

    Args:
        in_features: width of an input vector.
        num_classes: number of output logits.
        hidden_sizes: width of each hidden layer, e.g. ``[16, 16]``.
        activation: ``sigmoid``, ``tanh`` or ``relu``; picks Glorot or He initialisation.
        seed: seeds the weight initialisation.
        dtype: floating type of every tensor (float64 for the gradient check).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (16, 16),
        activation: str = "tanh",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        sizes = [in_features, *check_hidden_sizes(hidden_sizes), num_classes]
        check_activation(activation)
        init = "he" if activation == "relu" else "glorot"
        generator = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            is_output = i == len(sizes) - 2
            # The output layer feeds softmax, not ReLU, so it gets Glorot's variance.
            layers.append(Dense(fan_in, fan_out, "glorot" if is_output else init, generator, dtype))
            if not is_output:
                layers.append(Activation(activation))
        self.layers = nn.ModuleList(layers)
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) for inputs (N, in_features)."""
        x = x.to(self.dtype)
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_logits: Tensor) -> Tensor:
        """Propagate ``∂L/∂logits`` down through every layer, filling the Dense gradients.

        Returns ``∂L/∂x`` for the network's input.
        """
        grad = grad_logits
        for layer in reversed(self.layers):
            grad = layer.backward(grad)  # type: ignore[operator]
        return grad

    def dense_layers(self) -> list[Dense]:
        """The layers that own parameters, input to output."""
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def train_step(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        """One mini-batch SGD step: backprop, then ``θ ← θ - lr·∂L/∂θ``; returns the loss."""
        loss, grad_logits = softmax_cross_entropy(self(x), y)
        self.backward(grad_logits)
        for layer in self.dense_layers():
            layer.weight -= lr * layer.grad_weight
            layer.bias -= lr * layer.grad_bias
        return loss

"""The hand-written MLP (llm_lab/nn/mlp_scratch.py) against torch.autograd and torch.nn.init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llm_lab.data.toy2d import make_toy2d
from llm_lab.errors import ArgumentError
from llm_lab.nn.mlp_scratch import (
    ACTIVATIONS,
    Activation,
    Dense,
    MLPScratch,
    softmax_cross_entropy,
)

TORCH_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def autograd_reference(
    net: MLPScratch, x: torch.Tensor, y: torch.Tensor, activation: str
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The same network written with torch ops: loss, parameter gradients and input gradient."""
    params = []
    for layer in net.dense_layers():
        params += [layer.weight.clone().requires_grad_(), layer.bias.clone().requires_grad_()]
    h = x.clone().requires_grad_()
    out = h
    n_layers = len(params) // 2
    for i in range(n_layers):
        out = out @ params[2 * i] + params[2 * i + 1]
        if i < n_layers - 1:
            out = TORCH_ACTIVATIONS[activation](out)
    loss = F.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, [*params, h])
    return loss.detach(), list(grads[:-1]), grads[-1]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_matches_autograd_in_float64(activation: str) -> None:
    torch.manual_seed(0)
    net = MLPScratch(5, 4, hidden_sizes=[7, 6, 3], activation=activation, dtype=torch.float64)
    # Biases start at zero; perturb them so their gradients are checked at a generic point.
    for layer in net.dense_layers():
        layer.bias += 0.3 * torch.randn_like(layer.bias)
    x = torch.randn(11, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (11,))

    loss, grad_logits = softmax_cross_entropy(net(x), y)
    grad_x = net.backward(grad_logits)
    ref_loss, ref_grads, ref_grad_x = autograd_reference(net, x, y, activation)

    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
    mine = [g for layer in net.dense_layers() for g in (layer.grad_weight, layer.grad_bias)]
    assert len(mine) == len(ref_grads) == 8
    for got, want in zip(mine, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_x, ref_grad_x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward_matches_autograd(activation: str) -> None:
    z = torch.linspace(-4, 4, 101, dtype=torch.float64).reshape(1, -1) + 1e-3  # avoid relu's kink
    upstream = torch.randn_like(z, generator=torch.Generator().manual_seed(1))
    act = Activation(activation)
    out = act(z)
    zr = z.clone().requires_grad_()
    ref = TORCH_ACTIVATIONS[activation](zr)
    (ref_grad,) = torch.autograd.grad(ref, zr, upstream)
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(act.backward(upstream), ref_grad, rtol=0, atol=1e-12)


def test_softmax_cross_entropy_is_stable_and_matches_torch() -> None:
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [3.0, 3.0, 3.0], [-50.0, 20.0, 0.5]])
    targets = torch.tensor([2, 1, 0])
    logits = logits.double()
    loss, grad = softmax_cross_entropy(logits, targets)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    lr = logits.clone().requires_grad_()
    ref = F.cross_entropy(lr, targets)
    (ref_grad,) = torch.autograd.grad(ref, lr)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("init", "reference"), [("glorot", "xavier"), ("he", "kaiming")])
def test_initialisation_matches_torch_init(init: str, reference: str) -> None:
    """Same distribution as torch.nn.init (moments of 60,000 draws, tolerance 3 %)."""
    fan_in, fan_out = 300, 200
    mine = Dense(fan_in, fan_out, init, torch.Generator().manual_seed(0)).weight
    # torch stores Linear weights as (out, in); both inits use the same fans for that layout.
    ref = torch.empty(fan_out, fan_in, dtype=torch.float64)
    if reference == "xavier":
        torch.nn.init.xavier_uniform_(ref)
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert mine.abs().max() <= bound
    else:
        torch.nn.init.kaiming_normal_(ref, nonlinearity="relu")
    assert float(mine.std()) == pytest.approx(float(ref.std()), rel=0.03)
    assert abs(float(mine.mean())) < 0.01
    assert float(mine.abs().max()) == pytest.approx(float(ref.abs().max()), rel=0.25)


def test_initialisation_follows_the_activation() -> None:
    def stds(activation: str) -> list[float]:
        net = MLPScratch(400, 10, [400, 400], activation, dtype=torch.float64)
        return [float(layer.weight.std()) for layer in net.dense_layers()]

    he, glorot = math.sqrt(2 / 400), math.sqrt(2 / 800)
    assert stds("relu")[:2] == pytest.approx([he, he], rel=0.02)
    assert stds("tanh")[:2] == pytest.approx([glorot, glorot], rel=0.02)
    # The output layer feeds softmax, so it is Glorot whatever the hidden activation.
    assert stds("relu")[2] == pytest.approx(math.sqrt(2 / 410), rel=0.05)


@pytest.mark.parametrize(("name", "noise"), [("xor", 0.05), ("moons", 0.1), ("spirals", 0.05)])
def test_solves_the_nonlinear_sets(name: str, noise: float) -> None:
    """Hand-written backprop + SGD learns what no line can (validation accuracy ≥ 95 %)."""
    x, y = map(torch.from_numpy, make_toy2d(name, n_samples=400, noise=noise, seed=0))
    xv, yv = map(torch.from_numpy, make_toy2d(name, n_samples=400, noise=noise, seed=1))
    net = MLPScratch(2, 2, hidden_sizes=[32, 32], activation="relu", seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 32):
            batch = order[i : i + 32]
            net.train_step(x[batch], y[batch], lr=0.5)
    accuracy = (net(xv).argmax(dim=1) == yv).double().mean().item()
    assert accuracy >= 0.95, accuracy


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ArgumentError) as err:
        MLPScratch(2, 2, hidden_sizes=[8, 0])
    assert err.value.arg == "hidden_sizes"
    with pytest.raises(ArgumentError) as err:
        MLPScratch(2, 2, activation="swish")
    assert err.value.arg == "activation"
    for name in ACTIVATIONS:
        assert name in str(err.value)

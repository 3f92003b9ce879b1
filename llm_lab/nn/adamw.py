"""AdamW written out as a ``torch.optim.Optimizer``: Adam's moments, bias correction, decoupled decay.

Adam (Kingma & Ba 2015, Algorithm 1) keeps two running averages per parameter, of the gradient
(``m``, the first moment) and of its square (``v``, the second), and moves each weight by
``m / sqrt(v)``: a step whose size no longer depends on the gradient's scale. Both averages start
at zero, so early on they are biased towards zero; dividing by ``1 - beta ** t`` undoes that bias.

AdamW (Loshchilov & Hutter 2019, Algorithm 2) takes the weight decay out of the gradient: adding
``λ·θ`` to the gradient (L2 regularisation) would have Adam divide it by ``sqrt(v)`` too, so weights
with large gradients would barely decay. Instead every weight shrinks by ``lr·λ·θ`` directly,
before the Adam step (CS336 assignment 1 §4.3; Raschka ch. 5 trains with the library twin).

Subclassing ``torch.optim.Optimizer`` gives param groups (one ``weight_decay`` per group, as
``llm_lab/nn/weight_decay.py`` builds them), ``zero_grad``, and ``state_dict`` / ``load_state_dict``
for checkpoints, so Lightning and ``llm_lab/nn/checkpoint.py`` save and resume it like any torch
optimizer. The library twin is ``torch.optim.AdamW``; tests/test_adamw.py pins the two together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from llm_lab.errors import ArgumentError


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay; the arguments mean what they mean for ``torch.optim.AdamW``.

    Per parameter ``θ`` with gradient ``g``, at step ``t = 1, 2, ...``::

        θ ← θ - lr·weight_decay·θ                  (decoupled decay, on the weights before the step)
        m ← β1·m + (1 - β1)·g                      (first moment)
        v ← β2·v + (1 - β2)·g²                     (second moment)
        θ ← θ - lr · (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + eps)

    This is the order of ``torch.optim.AdamW``, and ``eps`` sits where Kingma & Ba's Algorithm 1
    puts it, on the bias-corrected ``sqrt(v̂)``. CS336's handout writes the same method slightly
    differently: it folds both corrections into the step size (so its eps is ``sqrt(1 - β2^t)``
    times smaller) and decays the weights after the Adam step, not before. The first difference
    matters only while ``1 - β2^t`` is far from 1, the second is of order ``lr²``.
    The state of each parameter is ``step`` (an int), ``exp_avg`` (m) and ``exp_avg_sq`` (v).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not lr >= 0.0:
            raise ArgumentError("lr", f"must be >= 0, got {lr}", "use e.g. 1e-3")
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ArgumentError("betas", f"each must be in [0, 1), got {list(betas)}", "use e.g. [0.9, 0.95]")
        if not eps >= 0.0:
            raise ArgumentError("eps", f"must be >= 0, got {eps}", "use e.g. 1e-8")
        if not weight_decay >= 0.0:
            raise ArgumentError("weight_decay", f"must be >= 0, got {weight_decay}", "use e.g. 0.1 or 0")
        # A plain tuple of floats: a config's list (or ListConfig) would otherwise end up in checkpoints.
        defaults = {"lr": lr, "betas": (float(beta1), float(beta2)), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]

                p.mul_(1.0 - lr * weight_decay)
                m.lerp_(p.grad, 1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                v_hat_sqrt = v.sqrt() / math.sqrt(1.0 - beta2**t)
                p.addcdiv_(m, v_hat_sqrt.add_(eps), value=-lr / (1.0 - beta1**t))
        return loss

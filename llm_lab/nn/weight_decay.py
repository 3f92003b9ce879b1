"""Which parameters weight decay should touch: the weight matrices of linear layers, nothing else.

Decay pulls weights towards zero. For a bias or a normalisation gain that is a pull towards an
arbitrary value, and for an embedding it shrinks the rows of rare tokens, which get few gradient
updates to push back (Loshchilov & Hutter 2019 decouple the decay; which tensors to exempt is the
GPT-2 / nanoGPT convention).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def weight_decay_groups(net: nn.Module, weight_decay: float | None = None) -> list[dict[str, Any]]:
    """Two optimizer groups: linear-layer weights (decayed), everything else (not decayed).

    A weight shared with an embedding (GPT-2's tied output head) counts as an embedding. With
    ``weight_decay=None`` the decayed group takes the optimizer's own ``weight_decay``.
    """
    decay: dict[int, nn.Parameter] = {}
    no_decay: dict[int, nn.Parameter] = {}
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, nn.Linear) and name == "weight":
                decay[id(p)] = p
            else:
                no_decay[id(p)] = p
    decayed: dict[str, Any] = {"params": [p for k, p in decay.items() if k not in no_decay]}
    if weight_decay is not None:
        decayed["weight_decay"] = weight_decay
    return [decayed, {"params": list(no_decay.values()), "weight_decay": 0.0}]

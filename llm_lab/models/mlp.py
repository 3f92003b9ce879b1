"""Multi-layer perceptrons in PyTorch: a classifier and Bengio et al.'s neural language model.

``MLP`` is the network of ``llm_lab.nn.mlp_scratch`` written with ``nn.Linear`` and autograd
(Raschka, appendix A.5). ``MLPLanguageModel`` is the neural probabilistic language model of Bengio,
Ducharme, Vincent & Jauvin (2003, §3): each of the previous ``k`` words is looked up in a shared
embedding table ``C``, the ``k`` vectors are concatenated into ``x``, and an MLP maps ``x`` to one
score per vocabulary word for the word that comes next. (The paper's optional direct connections
from ``x`` to the output are left out.)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from llm_lab.errors import ArgumentError
from llm_lab.nn.mlp_scratch import check_activation, check_hidden_sizes

_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}


def _init_like_scratch(linear: nn.Linear, activation: str | None) -> None:
    """He init before ReLU, Glorot otherwise, zero bias, as in ``mlp_scratch.Dense``.

    (PyTorch's own default, a uniform with variance 1/(3·fan_in), is fine for shallow nets; matching
    the scratch version makes their training curves comparable.)
    """
    if activation == "relu":
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


def mlp_layers(
    in_features: int,
    out_features: int,
    hidden_sizes: Sequence[int],
    activation: str,
    dropout: float,
) -> nn.Sequential:
    """Linear → activation → dropout, once per hidden width, then a Linear to ``out_features``."""
    sizes = [in_features, *check_hidden_sizes(hidden_sizes), out_features]
    check_activation(activation)
    if not 0 <= dropout < 1:
        raise ArgumentError("dropout", f"must be in [0, 1), got {dropout}", "e.g. 0.1, or 0 for none")
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        linear = nn.Linear(fan_in, fan_out)
        _init_like_scratch(linear, activation)
        layers += [linear, _ACTIVATION_MODULES[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    head = nn.Linear(sizes[-2], sizes[-1])
    _init_like_scratch(head, None)
    layers.append(head)
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Feed-forward classifier: features (N, in_features) → logits (N, num_classes)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = mlp_layers(in_features, num_classes, hidden_sizes, activation, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MLPLanguageModel(nn.Module):
    """Bengio et al. (2003): ids of the previous ``context_length`` tokens (B, k) → logits (B, V).

    Args:
        vocab_size: V, the number of token ids.
        context_length: k, how many previous tokens the model sees; a batch must have exactly k
            columns.
        n_embd: width of one token's embedding (the paper's m).
        hidden_sizes: widths of the hidden layers (the paper uses one tanh layer of h units).
        activation: ``tanh`` as in the paper, or ``relu`` / ``sigmoid``.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 4,
        n_embd: int = 32,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "tanh",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if context_length < 1:
            raise ArgumentError(
                "context_length", f"must be >= 1, got {context_length}", "use a positive length"
            )
        if n_embd < 1:
            raise ArgumentError("n_embd", f"must be >= 1, got {n_embd}", "use a positive size")
        self.context_length = context_length
        self.embedding = nn.Embedding(vocab_size, n_embd)  # the paper's shared matrix C
        self.mlp = mlp_layers(context_length * n_embd, vocab_size, hidden_sizes, activation, dropout)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.dim() != 2 or idx.shape[1] != self.context_length:
            raise ArgumentError(
                "idx",
                f"expected ids of shape (B, {self.context_length}), got {tuple(idx.shape)}",
                f"feed windows of exactly context_length={self.context_length} tokens",
            )
        # (B, k, m) → (B, k·m): concatenating the k embeddings keeps word order, unlike a sum.
        x = self.embedding(idx).flatten(start_dim=1)
        return self.mlp(x)

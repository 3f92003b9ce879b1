"""The PyTorch MLPs (llm_lab/models/mlp.py): classifier and Bengio et al. 2003 language model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_lab.data.corpus import Corpus
from llm_lab.data.lm import LMDataModule
from llm_lab.data.toy2d import make_toy2d
from llm_lab.errors import ArgumentError
from llm_lab.models.mlp import MLP, MLPLanguageModel
from llm_lab.nn.mlp_scratch import ACTIVATIONS, MLPScratch
from llm_lab.tokenizers.simple import SimpleTokenizer


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_same_function_as_the_hand_written_mlp(activation: str) -> None:
    """Copying the scratch weights into nn.Linear layers gives the same logits and gradients."""
    scratch = MLPScratch(3, 4, [8, 5], activation, seed=1, dtype=torch.float64)
    for layer in scratch.dense_layers():
        layer.bias += 0.1  # non-zero biases, so that their layout is checked too
    model = MLP(3, 4, [8, 5], activation).double()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for linear, dense in zip(linears, scratch.dense_layers(), strict=True):
            linear.weight.copy_(dense.weight.T)  # nn.Linear stores (out, in)
            linear.bias.copy_(dense.bias)
    x = torch.randn(9, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    torch.testing.assert_close(model(x), scratch(x), rtol=0, atol=1e-12)
    F.cross_entropy(model(x), y).backward()
    grad = F.softmax(scratch(x), dim=1)
    grad[torch.arange(9), y] -= 1
    scratch.backward(grad / 9)
    for linear, dense in zip(linears, scratch.dense_layers(), strict=True):
        torch.testing.assert_close(linear.weight.grad, dense.grad_weight.T, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("name", "noise"), [("moons", 0.1), ("spirals", 0.05)])
def test_reaches_97_percent_on_moons_and_spirals(name: str, noise: float) -> None:
    x, y = map(torch.from_numpy, make_toy2d(name, n_samples=400, noise=noise, seed=0))
    xv, yv = map(torch.from_numpy, make_toy2d(name, n_samples=400, noise=noise, seed=1))
    torch.manual_seed(0)
    model = MLP(2, 2, hidden_sizes=[64, 64], activation="relu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(250):  # full-batch: 400 points are one small matrix
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(xv).argmax(dim=1) == yv).double().mean().item()
    assert accuracy >= 0.97, accuracy


def test_mlp_errors_name_their_argument() -> None:
    with pytest.raises(ArgumentError) as err:
        MLP(2, 2, hidden_sizes=[0])
    assert err.value.arg == "hidden_sizes"
    with pytest.raises(ArgumentError) as err:
        MLP(2, 2, activation="gelu")
    assert err.value.arg == "activation"
    assert all(name in str(err.value) for name in ACTIVATIONS)
    with pytest.raises(ArgumentError) as err:
        MLPLanguageModel(100, context_length=0)
    assert err.value.arg == "context_length"


def test_language_model_concatenates_the_context_embeddings() -> None:
    """logits = MLP([C[w_{t-k}]; …; C[w_{t-1}]]) (Bengio et al. 2003, §3), in that order."""
    torch.manual_seed(0)
    net = MLPLanguageModel(vocab_size=50, context_length=3, n_embd=4, hidden_sizes=[16])
    idx = torch.randint(0, 50, (6, 3))
    logits = net(idx)
    assert logits.shape == (6, 50)
    table = net.embedding.weight
    x = torch.cat([table[idx[:, 0]], table[idx[:, 1]], table[idx[:, 2]]], dim=1)
    hidden_layer, head = net.mlp[0], net.mlp[2]
    assert isinstance(hidden_layer, nn.Linear) and isinstance(head, nn.Linear)
    hidden = torch.tanh(F.linear(x, hidden_layer.weight, hidden_layer.bias))
    expected = F.linear(hidden, head.weight, head.bias)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    # Word order matters: reversing the context changes the prediction.
    assert not torch.allclose(net(idx.flip(1)), logits)
    with pytest.raises(ArgumentError, match="context_length"):
        net(torch.zeros(2, 4, dtype=torch.long))


def test_language_model_beats_the_unigram_baseline_on_the_builtin_corpus() -> None:
    """Validation cross-entropy well below that of unigram frequencies (counted here, add-one)."""
    k = 4
    corpus = Corpus()
    words = SimpleTokenizer.from_corpus(corpus.train_documents(), min_count=2)
    data = LMDataModule(corpus, words, context_length=k, stride=1, batch_size=128)
    data.setup("fit")
    vocab_size = data.tokenizer.vocab_size
    # The net predicts the token after each window: validation targets are the windows' last y.
    val_x = torch.stack([data.val_set[i][0] for i in range(len(data.val_set))])
    val_y = torch.stack([data.val_set[i][1][-1] for i in range(len(data.val_set))])
    train_ids = torch.from_numpy(data.train_set.ids[0 : len(data.train_set.ids)].astype("int64"))
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1
    unigram = -(counts / counts.sum()).log()[val_y].mean().item()

    torch.manual_seed(0)
    net = MLPLanguageModel(vocab_size, context_length=k, n_embd=64, hidden_sizes=[128])
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batches = iter(data.train_dataloader())
    for _ in range(250):  # well past the bar by then (3.93 vs 4.20 nats here; 3.78 after 400)
        x, y = next(batches)
        loss = F.cross_entropy(net(x), y[:, -1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        val_loss = F.cross_entropy(net(val_x), val_y).item()
    # 0.75 nats is a perplexity more than 2x lower than the unigram model's.
    assert val_loss < unigram - 0.75, (val_loss, unigram)

"""The attention experiments: the one-layer model, the masked objective, the heatmaps, and each
``experiment=attention_*|positions|cbow_embedding`` composed by Hydra and trained for a few steps."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_in_process, run_train
from torch import nn

from llm_lab.callbacks.attention_maps import heatmap_image
from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.lit.masked_lm import MaskedTokenLM
from llm_lab.models.attention_lm import AttentionLM
from llm_lab.tokenizers.build import load_tokenizer

V, T = 30, 8


def build(**kwargs: Any) -> AttentionLM:
    torch.manual_seed(0)
    return AttentionLM(V, d_model=16, context_length=T, **kwargs).eval()


# ---------------------------------------------------------------- the model
@pytest.mark.parametrize("positions", ["none", "learned", "sinusoidal"])
@pytest.mark.parametrize(
    ("attention", "causal"),
    [("simple", False), ("self", False), ("causal", True), ("multihead", True), ("multihead", False)],
)
def test_only_causal_models_ignore_later_tokens(attention: str, causal: bool, positions: str) -> None:
    """Changing the tokens after position 3 leaves logits 0..3 alone exactly when causal."""
    model = build(attention=attention, causal=causal, positions=positions, num_heads=2)
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 4:] = (ids[:, 4:] + 1) % V
    before, after = model(ids)[:, :4], model(changed)[:, :4]
    assert model.causal == causal
    if causal:
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    else:
        assert (after - before).abs().max() > 1e-4


@pytest.mark.parametrize("positions", ["none", "learned", "sinusoidal"])
def test_without_positions_attention_ignores_order(positions: str) -> None:
    """Self-attention is permutation-equivariant (Vaswani §3.5): without positions, permuting the
    tokens permutes the outputs; either position embedding breaks that."""
    model = build(attention="self", positions=positions)
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(2))
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(3))
    permuted_out, out_permuted = model(ids[:, perm]), model(ids)[:, perm]
    if positions == "none":
        torch.testing.assert_close(permuted_out, out_permuted, rtol=1e-5, atol=1e-5)
    else:
        assert (permuted_out - out_permuted).abs().max() > 1e-3


def test_bad_choices_name_their_argument() -> None:
    for kwargs, arg in (
        ({"attention": "conv"}, "attention"),
        ({"positions": "rope"}, "positions"),
        ({"attention": "multihead", "num_heads": 3}, "num_heads"),
    ):
        with pytest.raises(ArgumentError) as err:
            build(**kwargs)
        assert err.value.arg == arg


# ---------------------------------------------------------------- embeddings from word vectors
class WordTokenizer:
    """The tokenizer surface AttentionLM reads: id i is the word ``words[i]``."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.vocab_size = len(words)

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)


@pytest.fixture
def vectors_file(tmp_path: Path) -> Path:
    path = tmp_path / "vectors.txt"
    path.write_text("2 4\nthe 0.5 -1 2 0.25\nfunction 1 2 3 4\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("freeze", [False, True])
def test_embeddings_start_from_word_vectors(vectors_file: Path, freeze: bool) -> None:
    words = [f"w{i}" for i in range(V)]
    words[3], words[7] = "the", "Function"  # the file's words are lower-case, as CBoW writes them
    model = AttentionLM(
        V + 1,
        d_model=4,
        context_length=T,
        embeddings=vectors_file,
        freeze_embeddings=freeze,
        tokenizer=WordTokenizer(words),
    )
    weight = model.tok_emb.weight
    torch.testing.assert_close(weight[3], torch.tensor([0.5, -1.0, 2.0, 0.25]))
    torch.testing.assert_close(weight[7], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert weight.requires_grad != freeze


def test_word_vectors_of_another_width_are_refused(vectors_file: Path) -> None:
    with pytest.raises(ArgumentError, match="4-dimensional") as err:
        AttentionLM(
            V, d_model=8, context_length=T, embeddings=vectors_file, tokenizer=WordTokenizer(["the"] * V)
        )
    assert err.value.arg == "embeddings"


# ---------------------------------------------------------------- the masked objective
class Recorder(nn.Module):
    """A stand-in net that remembers its input and returns fixed random logits."""

    def __init__(self, vocab_size: int, tokenizer: Any = None) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.seen: torch.Tensor | None = None
        self.logits = torch.randn(2, T, vocab_size, generator=torch.Generator().manual_seed(4))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.seen = ids
        return self.logits


def test_masked_objective_hides_and_scores_the_centre() -> None:
    module = MaskedTokenLM(Recorder, vocab_size=V)
    net = module.net
    assert isinstance(net, Recorder) and net.vocab_size == V + 1  # one extra id: [MASK]
    x = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(5))
    loss, n = module.loss((x, x))
    assert net.seen is not None
    centre = T // 2
    assert torch.all(net.seen[:, centre] == V)
    keep = torch.arange(T) != centre
    assert torch.equal(net.seen[:, keep], x[:, keep])
    assert n == 2
    torch.testing.assert_close(loss, F.cross_entropy(net.logits[:, centre], x[:, centre]))


# ---------------------------------------------------------------- heatmaps
def test_heatmap_darkens_with_weight() -> None:
    weights = np.array([[1.0, 0.0, 0.0], [0.7, 0.3, 0.0], [0.2, 0.5, 0.3]])
    cell = 10
    image = heatmap_image(weights, ["a", "bb", "ccc"], cell=cell)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    margin_y, margin_x = image.shape[0] - 3 * cell, image.shape[1] - 3 * cell
    centres = image[margin_y + cell // 2 :: cell, margin_x + cell // 2 :: cell].astype(float)
    brightness = centres.sum(-1)
    for row_weights, row_brightness in zip(weights, brightness, strict=True):
        order = np.argsort(row_weights)
        assert np.all(np.diff(row_brightness[order]) <= 0), "more weight must not be lighter"
    assert brightness[0, 1] == 3 * 255  # zero weight: white
    assert brightness[0, 0] == brightness[1, 0] == brightness[2, 1]  # each row's peak: darkest
    with pytest.raises(ValueError):
        heatmap_image(weights, ["a", "b"])


# ---------------------------------------------------------------- experiments end to end
TINY_RUN = [
    "corpus.max_documents=40",
    "trainer.max_steps=3",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "callbacks.attention_maps.every_n_steps=2",
    "callbacks.model_checkpoint=null",
]


def run_tiny(out: Path, experiment: str, *overrides: str) -> dict[str, float]:
    """Compose ``experiment`` as train.py would and fit it for 3 steps in this process."""
    return run_in_process(out, experiment, *TINY_RUN, *overrides)


def image_tags(run_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: list[str] = []
    for events in (run_dir / "tensorboard").glob("events.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        tags += acc.Tags()["images"]
    return tags


@pytest.mark.parametrize(
    ("experiment", "heads"),
    [
        ("attention_simple", 1),
        ("attention_trainable", 1),
        ("attention_causal", 1),
        ("attention_multihead", 4),
        ("positions", 4),
    ],
)
def test_experiment_trains_and_draws_heads(tmp_path: Path, experiment: str, heads: int) -> None:
    metrics = run_tiny(tmp_path / "run", experiment)
    assert math.isfinite(metrics["val/loss"]) and metrics["val/perplexity"] > 1
    expected = {f"maps/attn/head_{h}" for h in range(heads)}
    assert set(image_tags(tmp_path / "run")) == expected


@pytest.mark.parametrize("positions", ["none", "sinusoidal"])
def test_positions_switch(tmp_path: Path, positions: str) -> None:
    metrics = run_tiny(tmp_path / "run", "positions", f"model.net.positions={positions}")
    assert math.isfinite(metrics["val/loss"])


def causes(err: BaseException | None) -> Iterator[BaseException]:
    while err is not None:
        yield err
        err = err.__cause__


def test_cbow_embedding_experiment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llm_lab.models.attention_lm")
    vectors = tmp_path / "vectors.txt"
    rng = np.random.default_rng(0)
    lines = [
        f"{w} " + " ".join(f"{x:.4f}" for x in rng.normal(size=100)) for w in ("the", "function", "class")
    ]
    vectors.write_text("3 100\n" + "\n".join(lines) + "\n", encoding="utf-8")
    metrics = run_tiny(
        tmp_path / "frozen",
        "cbow_embedding",
        f"model.net.embeddings={vectors}",
        "model.net.freeze_embeddings=true",
    )
    assert math.isfinite(metrics["val/loss"])
    # The rows started are the vocabulary's spellings of the file's three words (any case).
    tokenizer = load_tokenizer(tmp_path / "frozen" / "tokenizer.json")
    spellings = [tokenizer.decode([i]).strip().lower() for i in range(tokenizer.vocab_size)]
    started = sum(word in ("the", "function", "class") for word in spellings)
    rows = tokenizer.vocab_size + 1  # the masked objective adds the [MASK] row
    report = f"embeddings: {started} of {rows} token rows start from {vectors}"
    assert started >= 3 and report in caplog.text, caplog.text
    # A model narrower than the vectors is refused with the key to fix (Hydra wraps the error).
    with pytest.raises(Exception) as info:
        run_tiny(
            tmp_path / "narrow", "cbow_embedding", f"model.net.embeddings={vectors}", "model.net.d_model=64"
        )
    config_errors = [e for e in causes(info.value) if isinstance(e, ConfigError)]
    assert config_errors and config_errors[0].key == "model.net.embeddings"


@pytest.mark.slow  # a fresh interpreter: ~15-20 s on a busy 2-core CPU
def test_attention_multihead_from_the_command_line(tmp_path: Path) -> None:
    result = run_train("experiment=attention_multihead", *TINY_RUN, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "maps/attn/head_3" in image_tags(tmp_path)


def test_a_next_token_model_must_be_causal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.net.causal"):
        run_tiny(tmp_path / "run", "attention_multihead", "model.net.causal=false")

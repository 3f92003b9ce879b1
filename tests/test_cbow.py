"""CBoW: the loss against a hand computation, the data against word2vec's rules, and gensim parity."""

from pathlib import Path

import numpy as np
import pytest
import torch

from llm_lab.data.cbow import CBoWBatches, keep_probabilities
from llm_lab.errors import ArgumentError
from llm_lab.eval.word_vectors import spearman, word_analogies, word_similarity
from llm_lab.models.cbow import (
    CBoW,
    load_word2vec_text,
    mean_pair_cosine,
    negative_sampling_loss,
    save_word2vec_text,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_negative_sampling_loss_and_gradient_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    h, u_o, u_n = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(2, 3))
    # loss = -log σ(u_o·h) - Σ_k log σ(-u_k·h)
    expected = -np.log(_sigmoid(u_o @ h)) - np.log(_sigmoid(-(u_n @ h))).sum()
    # ∂loss/∂h = (σ(u_o·h) - 1) u_o + Σ_k σ(u_k·h) u_k ; ∂/∂u_o = (σ(u_o·h) - 1) h ; ∂/∂u_k = σ(u_k·h) h
    grad_h = (_sigmoid(u_o @ h) - 1) * u_o + (_sigmoid(u_n @ h)[:, None] * u_n).sum(0)
    grad_uo = (_sigmoid(u_o @ h) - 1) * h
    grad_un = _sigmoid(u_n @ h)[:, None] * h[None, :]

    th, to, tn = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (h, u_o, u_n))
    scores = torch.cat([(to @ th)[None], tn @ th])[None]  # (1, 1+k)
    loss = negative_sampling_loss(scores)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(th.grad.numpy(), grad_h, rtol=1e-12)
    np.testing.assert_allclose(to.grad.numpy(), grad_uo, rtol=1e-12)
    np.testing.assert_allclose(tn.grad.numpy(), grad_un, rtol=1e-12)


def test_cbow_hidden_is_the_mean_of_real_context_words_and_softmax_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = CBoW(vocab_size=5, embed_dim=3, loss="softmax")
    torch.nn.init.normal_(model.out_embed.weight)
    context = torch.tensor([[0, 2, 5, 5]])  # 5 = padding
    w = model.in_embed.weight.detach()
    h = (w[0] + w[2]) / 2
    assert torch.allclose(model.hidden(context)[0], h)
    logits = model.out_embed.weight.detach() @ h
    expected = -(logits[4] - torch.logsumexp(logits, 0))
    assert model(context, torch.tensor([4])).item() == pytest.approx(expected.item(), rel=1e-6)


def test_noise_words_follow_unigram_to_the_three_quarters():
    counts = [1000, 100, 10, 1]
    model = CBoW(4, 2, negatives=5, noise_counts=counts)
    p = np.asarray(counts, float) ** 0.75
    np.testing.assert_allclose(model.noise_probs.numpy(), p / p.sum(), rtol=1e-6)
    # the sampling table gives each word its share of slots, up to one slot
    share = np.bincount(model.noise_table.numpy(), minlength=4) / len(model.noise_table)
    np.testing.assert_allclose(share, p / p.sum(), atol=1 / len(model.noise_table))


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [({"embed_dim": 0}, "embed_dim"), ({"loss": "hinge"}, "loss"), ({"negatives": 0}, "negatives")],
)
def test_bad_arguments_are_named(kwargs: dict, arg: str):
    with pytest.raises(ArgumentError) as err:
        CBoW(10, **kwargs)
    assert err.value.arg == arg


def test_keep_probability_is_word2vec_formula():
    counts = np.array([900, 90, 9, 1])
    t = 1e-2
    f = counts / counts.sum()
    expected = np.minimum(1.0, (np.sqrt(f / t) + 1) * t / f)
    np.testing.assert_allclose(keep_probabilities(counts, t), expected)
    assert keep_probabilities(counts, 0).tolist() == [1, 1, 1, 1]


def test_batches_respect_documents_windows_and_padding():
    rng = np.random.default_rng(1)
    doc_ids = np.repeat(np.arange(5), 40)
    ids = rng.integers(0, 50, size=len(doc_ids))
    window, pad = 3, 50
    ds = CBoWBatches(ids, doc_ids, np.ones(50), window, batch_size=16, pad_id=pad, seed=0, shuffle=False)
    batches = list(ds)
    assert len(batches) == len(ds) == len(ids) // 16
    for b, (context, centre) in enumerate(batches):
        assert context.shape == (16, 2 * window)
        for r in range(16):
            pos = b * 16 + r  # shuffle=False and nothing subsampled: centre r is token pos
            assert centre[r] == ids[pos]
            left = [
                ids[pos + o] if pos + o >= 0 and doc_ids[pos + o] == doc_ids[pos] else pad
                for o in (-3, -2, -1)
            ]
            right = [
                ids[pos + o] if pos + o < len(ids) and doc_ids[pos + o] == doc_ids[pos] else pad
                for o in (1, 2, 3)
            ]
            row, expected = context[r].tolist(), left + right
            assert all(v in (pad, e) for v, e in zip(row, expected, strict=True))
            # dynamic window: with reach b, every in-document word at distance <= b is present
            dist = [3, 2, 1, 1, 2, 3]
            reach = max((d for d, v in zip(dist, row, strict=True) if v != pad), default=0)
            assert all(v == e for d, v, e in zip(dist, row, expected, strict=True) if d <= reach)


def test_subsampling_drops_frequent_words_more():
    ids = np.concatenate([np.zeros(9000, int), np.ones(1000, int)])
    keep = keep_probabilities([9000, 1000], 1e-2)
    ds = CBoWBatches(ids, np.zeros(len(ids), int), keep, 2, batch_size=100, pad_id=2, seed=0)
    centres = torch.cat([c for _, c in ds]).numpy()
    frac_frequent = (centres == 0).mean()
    assert frac_frequent < 0.9 * 0.85  # 90 % before subsampling


def test_word2vec_text_roundtrip_and_truncation(tmp_path: Path):
    vecs = np.arange(6, dtype=np.float32).reshape(3, 2) / 7
    save_word2vec_text(tmp_path / "v.txt", ["a", "b", "c"], vecs)
    words, loaded = load_word2vec_text(tmp_path / "v.txt")
    assert words == ["a", "b", "c"] and np.allclose(loaded, vecs, atol=1e-6)
    lines = (tmp_path / "v.txt").read_text().splitlines()
    (tmp_path / "cut.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(Exception, match="truncated"):
        load_word2vec_text(tmp_path / "cut.txt")


def test_spearman_equals_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 50).astype(float)  # many ties
    y = x + rng.normal(size=50)
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)


def _gensim_data(name: str) -> Path:
    gensim = pytest.importorskip("gensim", reason="gensim not installed (pip install -e '.[dev]')")
    return Path(gensim.__file__).parent / "test" / "test_data" / name


def test_our_vectors_load_in_gensim_and_evaluation_matches_gensim(tmp_path: Path):
    from gensim.models import KeyedVectors

    sim_file, ana_file = _gensim_data("wordsim353.tsv"), _gensim_data("questions-words.txt")
    words = sorted({w for line in sim_file.read_text().splitlines()[2:] for w in line.split("\t")[:2]})
    words += sorted(
        {
            w
            for line in ana_file.read_text().splitlines()[:3000]
            if not line.startswith(":")
            for w in line.split()
        }
    )
    words = list(dict.fromkeys(words))[::2]  # drop half the words so some pairs are out of vocabulary
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(words), 8)).astype(np.float32)
    # Give the analogies structure: country = capital + one shared offset (+ noise), so 3CosAdd
    # gets many, but not all, answers right and the comparison with gensim is not trivially 0 = 0.
    index = {w: i for i, w in enumerate(words)}
    offset = rng.normal(size=8)
    for line in ana_file.read_text().splitlines()[1:400]:
        a, b, c, d = line.split()
        for capital, country in ((a, b), (c, d)):
            if capital in index and country in index:
                vectors[index[country]] = vectors[index[capital]] + offset + rng.normal(scale=0.4, size=8)
    save_word2vec_text(tmp_path / "vectors.txt", words, vectors)

    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "vectors.txt"))
    assert kv.index_to_key == words and np.allclose(kv.vectors, vectors, atol=1e-6)

    ours = word_similarity(words, vectors, sim_file)
    pearson, (rho, _), oov_ratio = kv.evaluate_word_pairs(str(sim_file))
    assert ours.score == pytest.approx(rho, abs=1e-6)
    assert ours.n_skipped / (ours.n_skipped + ours.n_used) * 100 == pytest.approx(oov_ratio, abs=1e-6)

    lines = ana_file.read_text().splitlines()[:3000]
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n")
    ana = word_analogies(words, vectors, tmp_path / "q.txt")
    score, sections = kv.evaluate_word_analogies(str(tmp_path / "q.txt"))
    total = sections[-1]
    assert ana.n_used == len(total["correct"]) + len(total["incorrect"])
    assert ana.score == pytest.approx(score, abs=1e-9)
    assert 0.05 < ana.score < 0.95


def test_bpe_cbow_pipeline_learns_vectors_for_bpe_tokens(tmp_path: Path):
    from conftest import run_in_process

    from llm_lab.tokenizers.formats import token_to_str

    out = tmp_path / "run"
    run_in_process(
        out, "bpe_cbow", "corpus.max_documents=40", "tokenizer.vocab_size=400", "trainer.max_epochs=1"
    )
    words, vectors = load_word2vec_text(out / "vectors.txt")
    # the CBoW vocabulary is made of the BPE tokenizer's tokens: retrain it the same way and compare
    from llm_lab.data.corpus import Corpus
    from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

    train = Corpus(max_documents=40, seed=42).load().train
    bpe = FastBPETokenizer.train(400, documents=train)
    printable = {token_to_str(t) for t in bpe.vocab.values()}
    assert set(words) <= printable and "Ġthe" in words and vectors.shape == (len(words), 100)


@pytest.mark.parametrize("loss", ["negative_sampling", "softmax"])
def test_sgd_step_is_word2vecs_update_from_autograds_gradients(loss: str):
    # word2vec's update, written out (CBoW.sgd_step), against autograd's gradients of the readable
    # loss (CBoW.forward) on the same batch and noise words: the output vectors take an SGD step on
    # the batch's summed loss; each context word takes the step of its example's hidden vector h
    # (word2vec.c adds e = -lr·∂loss/∂h to every context word, i.e. n times the gradient through
    # the mean of n words). The batch repeats words, so updates of one row must add up.
    torch.manual_seed(0)
    vocab, dim, lr = 7, 4, 0.3
    model = CBoW(vocab, dim, loss=loss, negatives=3, noise_counts=[5, 4, 3, 3, 2, 1, 1]).double()
    torch.nn.init.normal_(model.out_embed.weight)  # word2vec starts it at zero: no gradient for h then
    context = torch.tensor([[0, 1, 7, 7], [1, 1, 2, 3], [4, 7, 7, 7], [0, 5, 6, 2]])  # 7 = padding
    centre = torch.tensor([2, 0, 2, 6])
    noise = model.draw_noise(len(centre))
    n = (context != vocab).sum(1).double()

    def gradients(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        per_example = [model(context[i : i + 1], centre[i : i + 1], noise[i : i + 1]) for i in range(4)]
        (torch.stack(per_example) * weights).sum().backward()
        return model.in_embed.weight.grad.clone(), model.out_embed.weight.grad.clone()

    grad_out = gradients(torch.ones(4))[1]
    grad_in = gradients(n)[0]  # n_i · ∂loss_i/∂w: the gradient through the mean, times n
    w_in, w_out = model.in_embed.weight.detach().clone(), model.out_embed.weight.detach().clone()
    expected_loss = model(context, centre, noise).item()
    loss_value = model.sgd_step(context, centre, lr, noise)
    assert loss_value.item() == pytest.approx(expected_loss, rel=1e-12)
    torch.testing.assert_close(model.out_embed.weight.detach(), w_out - lr * grad_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.in_embed.weight.detach(), w_in - lr * grad_in, rtol=1e-12, atol=1e-12)
    assert model.in_embed.weight[vocab].abs().max() == 0  # the padding row stays zero


def test_sgd_step_learns_what_adam_learns_on_a_toy_language():
    # Two word families that never share contexts: after training, each word's nearest neighbour is
    # in its own family, whether word2vec's SGD or autograd + Adam trained the vectors.
    rng = np.random.default_rng(0)
    family = [0, 1, 2, 3], [4, 5, 6, 7]
    docs = [rng.choice(family[d % 2], size=12) for d in range(400)]
    ids = np.concatenate(docs)
    doc_ids = np.repeat(np.arange(len(docs)), 12)
    for train in ("sgd", "adam"):
        torch.manual_seed(0)
        model = CBoW(8, 16, negatives=3, noise_counts=np.bincount(ids))
        adam = torch.optim.Adam(model.parameters(), lr=0.02)
        batches = CBoWBatches(ids, doc_ids, np.ones(8), 2, batch_size=64, pad_id=8, seed=0)
        for epoch in range(3):
            batches.set_epoch(epoch)
            for context, centre in batches:
                if train == "sgd":
                    model.sgd_step(context, centre, lr=0.05)
                else:
                    adam.zero_grad()
                    model(context, centre).backward()
                    adam.step()
        unit = torch.nn.functional.normalize(model.word_vectors, dim=1)
        cos = (unit @ unit.T).fill_diagonal_(-2)
        nearest = cos.argmax(1)
        assert all((nearest[w] < 4) == (w < 4) for w in range(8)), (train, nearest)


def test_mean_pair_cosine_is_the_mean_over_all_pairs():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 5)) + 2.0  # a shared direction: a mean cosine well above 0
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = [unit[i] @ unit[j] for i in range(30) for j in range(30) if i != j]
    assert mean_pair_cosine(vectors) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert mean_pair_cosine(vectors - vectors.mean(0)) < 0.1 < mean_pair_cosine(vectors)


def test_prefetched_batches_keep_their_order_raise_errors_and_stop_when_closed():
    import threading

    from llm_lab.data.cbow import prefetched

    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetched(failing()))

    endless = prefetched(iter(lambda: 0, 1), depth=2)  # a producer that never ends by itself
    assert next(endless) == 0
    endless.close()
    for thread in threading.enumerate():
        if thread.name == "cbow-batches":
            thread.join(timeout=5)
            assert not thread.is_alive()

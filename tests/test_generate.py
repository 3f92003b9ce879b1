"""Sampling and generation: filters against HF's logits warpers, the KV cache against no cache,
and ``generate.py`` against transformers' own greedy decoding."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, load_script, run_train, signal_at
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from llm_lab.errors import ArgumentError, ConfigError
from llm_lab.models import GPT
from llm_lab.models.gpt import GPTConfig
from llm_lab.models.sampling import sample_next, top_k_filter, top_p_filter
from llm_lab.nn.attention import KVCache
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT

V = 40
MODERN = {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rope", "qkv_bias": False}
VARIANTS = pytest.mark.parametrize("variant", [{}, MODERN], ids=["gpt2", "modern"])


def tiny(**changes: object) -> GPT:
    torch.manual_seed(0)
    config = {"vocab_size": V, "context_length": 24, "n_layer": 2, "n_head": 2, "n_embd": 32}
    return GPT(GPTConfig(**{**config, **changes})).eval()  # type: ignore[arg-type]


# --- sampling filters ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, V])
def test_top_k_filter_matches_hf(k: int) -> None:
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(k))
    expected = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(top_k_filter(logits, k), expected)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1.0])
def test_top_p_filter_matches_hf(p: float) -> None:
    logits = 2 * torch.randn(6, V, generator=torch.Generator().manual_seed(int(p * 10)))
    expected = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(torch.isinf(top_p_filter(logits, p)), torch.isinf(expected))


def test_sampling_follows_the_filtered_distribution() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    draws = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}
    # Renormalised over the top 2: 0.5 / 0.8 = 0.625; 20k draws have a std error of ~0.0035.
    assert (draws == 0).float().mean().item() == pytest.approx(0.625, abs=0.015)
    assert torch.equal(sample_next(logits[:3], temperature=0), torch.zeros(3, dtype=torch.long))


def test_bad_sampling_settings_name_their_key() -> None:
    logits = torch.zeros(1, V)
    for kwargs, key in [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
    ]:
        with pytest.raises(ArgumentError, match=f"^{key}: "):
            sample_next(logits, **kwargs)  # type: ignore[arg-type]


# --- the KV cache ---------------------------------------------------------------------------------


@VARIANTS
def test_cached_forward_gives_the_full_forward_logits(variant: dict[str, object]) -> None:
    model = tiny(**variant)
    x = torch.randint(0, V, (2, 20))
    caches = [KVCache() for _ in model.blocks]
    with torch.no_grad():
        full = model(x)
        # A 7-token prompt, then one token at a time, then a chunk of 4.
        pieces = [model(x[:, :7], kv_cache=caches)]
        pieces += [model(x[:, t : t + 1], kv_cache=caches) for t in range(7, 16)]
        pieces.append(model(x[:, 16:], kv_cache=caches))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@VARIANTS
@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 0.0}, {"temperature": 1.0}, {"temperature": 0.8, "top_k": 10, "top_p": 0.9}],
    ids=["greedy", "sampled", "top-k-top-p"],
)
def test_cache_yields_the_same_tokens_as_no_cache(
    variant: dict[str, object], sampling: dict[str, Any]
) -> None:
    model = tiny(**variant)
    prompt = torch.randint(0, V, (3, 5))
    # 30 new tokens run past context_length=24, so the cache is dropped half-way (documented).
    outputs = [
        model.generate(
            prompt, 30, use_cache=use_cache, generator=torch.Generator().manual_seed(1), **sampling
        )
        for use_cache in (True, False)
    ]
    assert outputs[0].shape == (3, 35)
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0][:, :5], prompt)


def test_generation_is_reproducible_by_seed() -> None:
    model = tiny()
    prompt = torch.zeros(1, 1, dtype=torch.long)

    def sample(seed: int) -> torch.Tensor:
        return model.generate(prompt, 20, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))  # 40^20 sequences: a collision is hopeless


def test_top_k_of_one_is_greedy() -> None:
    model = tiny()
    prompt = torch.randint(0, V, (2, 3))
    assert torch.equal(model.generate(prompt, 10, top_k=1), model.generate(prompt, 10, temperature=0))


def test_eos_stops_and_pads_finished_rows() -> None:
    model = tiny()
    prompt = torch.randint(0, V, (4, 3))
    free = model.generate(prompt, 12, temperature=0)
    # Declare the token row 0 greedily produces at its third step the end of sequence.
    eos = int(free[0, 5])
    out = model.generate(prompt, 12, temperature=0, eos_id=eos)
    for row, free_row in zip(out, free, strict=True):
        new, free_new = row[3:], free_row[3:]
        hits = (free_new == eos).nonzero()
        if len(hits):  # identical up to the first eos, then nothing but eos
            first = int(hits[0])
            assert torch.equal(new[: first + 1], free_new[: first + 1])
            assert torch.all(new[first:] == eos)
        else:
            assert torch.equal(new, free_new[: len(new)])
    # Generation stops as soon as every row has finished.
    finished_at = [int((r[3:] == eos).nonzero()[0]) if (r[3:] == eos).any() else 12 for r in free]
    assert out.shape[1] == 3 + min(12, max(finished_at) + 1)


def test_generate_keeps_training_mode_and_rejects_empty_prompts() -> None:
    model = tiny().train()
    model.generate(torch.zeros(1, 2, dtype=torch.long), 2)
    assert model.training
    with pytest.raises(ArgumentError, match="T ≥ 1"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 2)


def test_stream_yields_each_step_as_it_is_made_and_generate_is_its_whole() -> None:
    model, idx = tiny(), torch.tensor([[1, 2, 3], [4, 5, 6]])
    steps = model.stream(idx, 6, generator=torch.Generator().manual_seed(0))
    first = next(steps)  # one forward pass, not six
    assert first.shape == (2,) and not model.training
    streamed = torch.cat([idx, first[:, None], *(step[:, None] for step in steps)], dim=1)
    assert torch.equal(streamed, model.generate(idx, 6, generator=torch.Generator().manual_seed(0)))


# --- generate.py ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folder_with_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny GPT2LMHeadModel saved by transformers, plus a BPE tokenizer.json beside it."""
    folder = tmp_path_factory.mktemp("hf_with_tokenizer")
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    tokenizer = FastBPETokenizer.train(300, text=text, special_tokens=[ENDOFTEXT])
    tokenizer.save(folder / "tokenizer.json")
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=tokenizer.vocab_size, n_positions=64)
    ).save_pretrained(folder)
    return folder


def test_generate_py_gives_transformers_greedy_text(hf_folder_with_tokenizer: Path) -> None:
    folder = hf_folder_with_tokenizer
    result = run_train(
        f"hf_path={folder}",
        "prompt=the cat",
        "temperature=0",
        "max_new_tokens=10",
        script="generate.py",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = HFTokenizer(folder / "tokenizer.json")
    reference = GPT2LMHeadModel.from_pretrained(folder).eval()
    prompt = torch.tensor([tokenizer.encode("the cat")])
    ids = reference.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)[
        0
    ].tolist()
    eot = tokenizer.token_to_id(ENDOFTEXT)
    if eot in ids[prompt.shape[1] :]:  # ours stops at the end-of-text token, HF was told not to
        ids = ids[: ids.index(eot, prompt.shape[1]) + 1]
    assert result.stdout.rstrip("\n") == tokenizer.decode(ids)


def test_generate_py_says_how_far_a_long_generation_has_come(capsys: pytest.CaptureFixture[str]) -> None:
    """The text is printed at the end; meanwhile a line on stderr every few seconds (here: every step)."""
    steps = load_script("generate.py").with_progress(tiny().stream(torch.tensor([[1, 2]]), 5), 5, every_s=0)
    assert len(list(steps)) == 5
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"generated {n} of 5 tokens" for n in range(1, 6)]
    assert all(line.endswith(" tokens/s)") for line in lines)


def test_generate_py_gives_back_the_callers_sigterm_handler(hf_folder_with_tokenizer: Path) -> None:
    """Its own handler (which keeps the text on SIGTERM) is for the generation only: left behind in
    a caller (a notebook, the tests), later forked workers would inherit it."""
    before = signal.getsignal(signal.SIGTERM)
    done = run_train(f"hf_path={hf_folder_with_tokenizer}", "max_new_tokens=2", script="generate.py")
    assert done.returncode == 0 and signal.getsignal(signal.SIGTERM) is before, done.stderr[-2000:]


@pytest.mark.parametrize("signum", [signal.SIGINT], ids=["SIGINT"])  # SIGTERM: test_interrupts.py
def test_a_signal_in_generate_py_prints_the_text_made_so_far(
    hf_folder_with_tokenizer: Path, signum: int
) -> None:
    """A long generation cut short keeps what it made: the prompt and the tokens up to the signal."""
    args = [f"hf_path={hf_folder_with_tokenizer}", "prompt=the cat", "max_new_tokens=100000"]
    args += ["use_cache=false", "progress_every_s=0", "temperature=0"]
    stopped = signal_at("generated 5 of", signum, *args, script="generate.py", watch="stderr")
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    last = stopped.stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    made = re.fullmatch(rf"interrupted: {name} after ([\d,]+) of 100,000 new tokens", last)
    assert made is not None and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    tokenizer = HFTokenizer(hf_folder_with_tokenizer / "tokenizer.json")
    printed = tokenizer.encode(stopped.stdout.rstrip("\n"))
    prompt = tokenizer.encode("the cat")
    assert printed[: len(prompt)] == prompt and len(printed) > len(prompt)


@pytest.mark.parametrize("size", [260, 600])
def test_generate_py_rejects_a_tokenizer_of_another_size(
    hf_folder_with_tokenizer: Path, tmp_path: Path, size: int
) -> None:
    """Larger: ids without an embedding row; smaller: ids the model generates that it cannot decode.
    Both are said before generating."""
    text = "".join(chr(c) for c in range(0x4E00, 0x4F00)) * 3  # many distinct multi-byte chars
    FastBPETokenizer.train(size, text=text, special_tokens=[ENDOFTEXT]).save(tmp_path / "tokenizer.json")
    cfg = OmegaConf.load(ROOT / "conf" / "generate.yaml")
    cfg.hf_path, cfg.tokenizer_path = str(hf_folder_with_tokenizer), str(tmp_path / "tokenizer.json")
    with pytest.raises(ConfigError, match=rf"tokenizer_path: the tokenizer has {size} tokens, the model \d+"):
        load_script("generate.py").generate(cfg)
    cfg.ckpt_path = "somewhere.ckpt"
    with pytest.raises(ConfigError, match="exactly one of init_from, ckpt_path and hf_path"):
        load_script("generate.py").generate(cfg)

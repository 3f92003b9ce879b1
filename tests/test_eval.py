"""Evaluation scorers: batched log-likelihoods, bits per byte, cloze, the unigram baseline, the
built-in held-out tasks, parity with transformers on an exported folder, and bad input."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_lab.callbacks.evaluation import EvaluationTasks
from llm_lab.data.corpus import Corpus, builtin_corpus, topic_module
from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval import builtin
from llm_lab.eval.baselines import Unigram
from llm_lab.eval.cloze import Cloze, score_cloze
from llm_lab.eval.export import save_hf_folder
from llm_lab.eval.heldout import HELDOUT_MODULES, is_heldout
from llm_lab.eval.multiple_choice import read_choices, score_choices
from llm_lab.eval.scoring import HFCausalLM, LabLM, Scorer
from llm_lab.eval.tasks import Evaluation, read_task_file
from llm_lab.eval.text import document_loglikelihoods, score_text
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.models.hf import save_hf
from llm_lab.models.pretrained import load_model
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

WINDOW = 48
DOCS = [
    "Return the number of items in a container.",
    "The json module encodes and decodes JSON documents; dumps() writes a string and loads() reads one.",
    " ".join(builtin_corpus()[3].split()[:120]),  # longer than the window: several windows
]


@pytest.fixture(scope="module")
def tokenizer() -> FastBPETokenizer:
    return FastBPETokenizer.train(300, documents=builtin_corpus()[:10], special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def net(tokenizer: FastBPETokenizer) -> GPT:
    """A random tiny GPT (~70k parameters); biases randomised so that the export carries them."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=tokenizer.vocab_size, context_length=WINDOW, n_layer=2, n_head=2, n_embd=32)
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def exported(net: GPT, tokenizer: FastBPETokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hf_folder(net, tokenizer, tmp_path_factory.mktemp("hf"))


def reference_nll(model: torch.nn.Module, ids: list[int], scored: int) -> float:
    """Σ −log p of the last ``scored`` tokens of ids given what precedes, from transformers'
    logits in one forward pass."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x[:, :-1]).logits
    return F.cross_entropy(logits[0, -scored:].float(), x[0, -scored:], reduction="sum").item()


def test_batched_pairs_equal_each_pair_scored_alone(net: GPT, tokenizer: FastBPETokenizer) -> None:
    """Right-padded batches, sorted by length, give each pair the log-likelihood it has alone."""
    scorer = Scorer(LabLM(net), tokenizer, batch_size=3)
    texts = [("The function", " returns a value."), ("", "Hello"), ("a b c d e f g h", " i j"), ("x", " y")]
    texts += [(DOCS[2], " and more.")]  # longer than the window: cut from the left
    pairs = [scorer.encode_pair(context, continuation) for context, continuation in texts]
    batched = scorer.loglikelihoods(pairs)
    for (context, continuation), result in zip(pairs, batched, strict=True):
        ids = (context + continuation)[-(WINDOW + 1) :]
        x = torch.tensor([ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(net(x[:, :-1]), dim=-1)[0, -len(continuation) :]
        expected = logprobs.gather(1, torch.tensor(continuation)[:, None]).sum().item()
        assert result.value == pytest.approx(expected, abs=1e-4)
        assert result.tokens == len(continuation)
        assert result.is_greedy == bool((logprobs.argmax(-1) == torch.tensor(continuation)).all())


def test_pairs_split_at_the_contexts_own_encoding(tokenizer: FastBPETokenizer, net: GPT) -> None:
    scorer = Scorer(LabLM(net), tokenizer)
    context, continuation = scorer.encode_pair("The answer is ", "Paris")  # the space moves over
    assert context == tokenizer.encode("The answer is")
    assert context + continuation == tokenizer.encode("The answer is Paris")
    assert scorer.encode_pair("", "Paris") == ([scorer.eot_id], tokenizer.encode("Paris"))


@pytest.mark.parametrize("stride", [None, 16, 1])
def test_rolling_windows_score_every_token_once(net: GPT, tokenizer: FastBPETokenizer, stride: int) -> None:
    scorer = Scorer(LabLM(net), tokenizer)
    ids = tokenizer.encode(DOCS[2])
    assert len(ids) > 2 * WINDOW
    windows = scorer.rolling_windows(ids, stride)
    assert [token for _, continuation in windows for token in continuation] == ids
    assert windows[0][0] == [scorer.eot_id]
    for context, continuation in windows:
        assert len(context) + len(continuation) <= WINDOW + 1
        if stride is not None and len(continuation) == stride:  # a later window: full context
            assert len(context) + len(continuation) == WINDOW + 1


def test_document_loglikelihoods_equal_transformers_on_the_exported_folder(
    net: GPT, tokenizer: FastBPETokenizer, exported: Path
) -> None:
    """Per document, the lab's scorer on the lab model equals transformers' logits on the export
    (tolerance 1e-4 nats per document), short documents in one pass and a long one in the
    harness's disjoint windows, each predicting its first token from <|endoftext|>."""
    reference = AutoModelForCausalLM.from_pretrained(exported).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(exported)
    scorer = Scorer(LabLM(net), tokenizer, batch_size=2)
    ours = document_loglikelihoods(scorer, DOCS)
    for document, (value, tokens) in zip(DOCS, ours, strict=True):
        ids = hf_tokenizer(document, add_special_tokens=False)["input_ids"]
        stream = [hf_tokenizer.eos_token_id, *ids]
        assert tokens == len(ids)
        # The harness's windows: tokens [k·W, (k+1)·W) of the document, seeing the W tokens before
        # the last of them (stream[j + 1] is ids[j]; the first window starts at <|endoftext|>).
        nll = 0.0
        for k in range(0, len(ids), WINDOW):
            end = min(k + WINDOW, len(ids))
            nll += reference_nll(reference, stream[max(0, end - WINDOW) : end + 1], end - k)
        assert -value == pytest.approx(nll, abs=1e-4)


def test_bits_per_byte_agree_through_the_lab_model_and_its_hf_export(
    net: GPT, tokenizer: FastBPETokenizer, exported: Path
) -> None:
    hf = HFCausalLM(AutoModelForCausalLM.from_pretrained(exported))
    lab = score_text(Scorer(LabLM(net), tokenizer), DOCS, stride=20)
    theirs = score_text(Scorer(hf, tokenizer), DOCS, stride=20)
    assert lab["bits_per_byte"] == pytest.approx(theirs["bits_per_byte"], rel=1e-5)
    assert lab["bytes"] == sum(len(d.encode()) for d in DOCS)
    assert "unk_share" not in lab  # a byte-level BPE reads every byte
    assert lab["bits_per_byte"] == pytest.approx(
        lab["nll_per_token"] * lab["tokens"] / math.log(2) / lab["bytes"], rel=1e-9
    )
    # A random model over 300 tokens knows nothing: about ln 300 nats per token.
    assert abs(lab["nll_per_token"] - math.log(300)) < 0.5


def test_smaller_stride_gives_more_context_for_the_same_tokens(net: GPT, tokenizer: FastBPETokenizer) -> None:
    scorer = Scorer(LabLM(net), tokenizer)
    disjoint, sliding = score_text(scorer, DOCS[2:], None), score_text(scorer, DOCS[2:], 8)
    assert disjoint["tokens"] == sliding["tokens"] == len(tokenizer.encode(DOCS[2]))
    assert disjoint["bits_per_byte"] != sliding["bits_per_byte"]


def test_a_word_level_run_says_how_much_text_it_read_as_unknown() -> None:
    """Bits per byte of a word-level model leave out what <|unk|> stands for: unk_share says how
    much, the share of the words the training split never showed."""
    from llm_lab.tokenizers.simple import SimpleTokenizer, split_words

    train = builtin_corpus()[:5]
    words = SimpleTokenizer.from_corpus(train)
    net = GPT(GPTConfig(vocab_size=words.vocab_size, context_length=WINDOW, n_layer=1, n_head=2, n_embd=16))
    metrics = score_text(Scorer(LabLM(net), words), DOCS)
    seen = set(split_words(" ".join(train)))
    held_out = [word for document in DOCS for word in split_words(document)]
    assert metrics["unk_share"] == pytest.approx(sum(w not in seen for w in held_out) / len(held_out))
    assert 0 < metrics["unk_share"] < 1


def test_cloze_is_greedy_exactly_when_transformers_greedy_decoding_makes_the_word(
    net: GPT, tokenizer: FastBPETokenizer, exported: Path
) -> None:
    reference = AutoModelForCausalLM.from_pretrained(exported).eval()
    scorer = Scorer(LabLM(net), tokenizer)
    items = [Cloze(context, word) for context, word in [("The json", "module"), ("Return the", "value")]]
    # An item whose word is the model's own greedy continuation, so that acc has a 1 to find.
    prompt = tokenizer.encode("The function")
    made = reference.generate(torch.tensor([prompt]), max_new_tokens=2, do_sample=False)[0, len(prompt) :]
    items.append(Cloze("The function", tokenizer.decode(made.tolist()).strip()))
    for item, result in zip(items, score_cloze(scorer, items), strict=True):
        context, word = scorer.encode_pair(item.context, " " + item.word)
        greedy = reference.generate(torch.tensor([context]), max_new_tokens=len(word), do_sample=False)
        assert result.is_greedy == (greedy[0, len(context) :].tolist() == word)


def test_unigram_baseline_is_add_one_frequencies(tokenizer: FastBPETokenizer) -> None:
    train, held_out = builtin_corpus()[:5], DOCS
    unigram = Unigram.fit(tokenizer, train)
    counts = Counter(token for document in train for token in tokenizer.encode(document))
    total, vocab = sum(counts.values()), tokenizer.vocab_size
    bits = sum(
        -math.log2((counts[token] + 1) / (total + vocab)) for d in held_out for token in tokenizer.encode(d)
    )
    size = sum(len(d.encode()) for d in held_out)
    assert unigram.bits_per_byte(tokenizer, held_out) == pytest.approx(bits / size, rel=1e-9)


# --- the held-out modules and the built-in tasks -------------------------------------------------


def test_builtin_corpus_leaves_out_the_pages_of_held_out_modules() -> None:
    from pydoc_data.topics import topics

    pages = [page for page in topics.values() if topic_module(page) is not None]
    assert any(topic_module(page) == "pdb" for page in pages)  # the debugger's page exists...
    assert "pdb" in HELDOUT_MODULES
    corpus = builtin_corpus()
    assert not any(is_heldout(topic_module(doc) or "") for doc in corpus)  # ...and is left out
    assert len(corpus) == len(topics) - sum(is_heldout(topic_module(p) or "") for p in pages)
    assert Corpus().fingerprint() != Corpus(seed=1).fingerprint()


def test_builtin_tasks_have_500_items_from_held_out_modules_only() -> None:
    mc, cloze, documents = builtin.docs_mc(), builtin.docs_cloze(), builtin.docs_bpb()
    assert min(len(mc), len(cloze), len(documents)) >= 500
    for item in mc:
        assert is_heldout(item.ctx.split("(")[0])
        assert len(set(item.endings)) == 4 and 0 <= item.label < 4
    corpus = " ".join(" ".join(doc.split()) for doc in builtin_corpus())
    answers = [item.endings[item.label] for item in mc]
    leaked = [answer for answer in answers if len(answer) > 40 and answer in corpus]
    assert not leaked, f"held-out docstrings found in the training corpus: {leaked[:3]}"
    assert builtin.docs_mc() is mc  # made once, the same items every call


def test_builtin_tasks_run_with_their_baselines(net: GPT, tokenizer: FastBPETokenizer) -> None:
    wide = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=256, n_layer=1, n_head=2, n_embd=16))
    evaluation = Evaluation(Scorer(LabLM(wide), tokenizer, batch_size=32), Corpus(max_documents=6), limit=20)
    results = {task: evaluation.run(task) for task in ("docs_mc", "docs_cloze", "docs_bpb")}
    mc, cloze, text = results.values()
    logged = {f"eval/{task}/{name}" for task, metrics in results.items() for name in metrics if name != "n"}
    assert logged <= set(EvaluationTasks.LOGGED)  # the names the preflight knows the callback logs
    assert mc["n"] == cloze["n"] == text["n"] == 20
    assert mc["random_acc"] == 0.25 and 0 <= mc["acc"] <= 1 and 0 <= mc["acc_norm"] <= 1
    assert cloze["perplexity"] > 1 and cloze["unigram_perplexity"] > 1
    assert 0 < text["unigram_bits_per_byte"] < 8 < text["bits_per_byte"] + 8


# --- bad input -------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


GOOD = {"ctx": "A man sits down", "endings": ["and eats.", "and flies."], "label": 0}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"ctx": "x", "label": 0}, "row 2: missing field 'endings'"),
        ({**GOOD, "label": 2}, "row 2: label 2 is out of range for 2 endings (use 0 to 1"),
        ({**GOOD, "label": "0"}, "row 2: label must be int, got '0'"),
        ({**GOOD, "endings": ["only one"]}, "row 2: endings must be 2 or more non-empty strings"),
    ],
)
def test_a_bad_row_is_named_by_file_row_and_fix(tmp_path: Path, row: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [GOOD, row])
    with pytest.raises(DataError, match=r"items\.jsonl, " + message.replace("(", r"\(").replace("[", r"\[")):
        read_choices(path)


def test_an_empty_task_or_unknown_fields_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl: the file is empty"):
        read_task_file(empty)
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "?", "answer": "!"}])
    with pytest.raises(DataError, match=r"odd\.jsonl, row 1: fields question, answer make no task"):
        read_task_file(odd)


def test_an_ending_longer_than_the_window_is_named(
    tmp_path: Path, net: GPT, tokenizer: FastBPETokenizer
) -> None:
    long = write_jsonl(tmp_path / "long.jsonl", [{**GOOD, "endings": ["short.", "word " * 80]}])
    message = r"long\.jsonl, row 1: the ending 'word word .* more than the model's window of 48 \(shorten"
    with pytest.raises(DataError, match=message):
        score_choices(Scorer(LabLM(net), tokenizer), read_choices(long))


def test_a_model_folder_without_a_tokenizer_is_refused(tmp_path: Path, net: GPT) -> None:
    save_hf(net, tmp_path)
    with pytest.raises(DataError, match="no tokenizer.json beside the model .*tokenizer_path="):
        load_model(tmp_path)


def test_a_complete_hf_folder_loads_with_its_tokenizer(exported: Path, net: GPT) -> None:
    loaded = load_model(exported)
    assert loaded.kind == "hf" and loaded.tokenizer.vocab_size == net.config.vocab_size
    x = torch.randint(0, net.config.vocab_size, (1, 10))
    with torch.no_grad():
        assert torch.allclose(loaded.net.eval()(x), net(x), atol=1e-5)


def test_a_llama_folder_is_scored_after_its_own_start_token(tmp_path: Path) -> None:
    """A Llama tokenizer has no <|endoftext|>: a document's first token is predicted from the
    folder's bos_token (<s>), as the harness does; the log-likelihood equals transformers' (1e-4)."""
    llama_tokenizer = FastBPETokenizer.train(300, documents=builtin_corpus()[:10], special_tokens=["<s>"])
    torch.manual_seed(0)
    llama = GPT(
        GPTConfig(
            vocab_size=llama_tokenizer.vocab_size,
            context_length=WINDOW,
            n_layer=1,
            n_head=2,
            n_embd=32,
            norm="rmsnorm",
            mlp="swiglu",
            positions="rope",
            qkv_bias=False,
            attn_out_bias=False,
            mlp_bias=False,
            tie_embeddings=False,
        )
    )
    save_hf(llama, tmp_path)
    llama_tokenizer.save(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}), encoding="utf-8")
    loaded = load_model(tmp_path)
    assert loaded.start_token == "<s>"
    scorer = Scorer(LabLM(loaded.net), loaded.tokenizer, start_token=loaded.start_token)
    [(value, tokens)] = document_loglikelihoods(scorer, DOCS[:1])
    reference = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = [llama_tokenizer.token_to_id("<s>"), *llama_tokenizer.encode(DOCS[0])]
    assert tokens == len(ids) - 1
    assert -value == pytest.approx(reference_nll(reference, ids, len(ids) - 1), abs=1e-4)
    with pytest.raises(ArgumentError, match=re.escape("has no <|endoftext|> token")):
        Scorer(LabLM(loaded.net), loaded.tokenizer)


def test_a_hugging_face_dataset_with_its_own_column_names_scores_as_the_same_jsonl(
    tmp_path: Path, net: GPT, tokenizer: FastBPETokenizer
) -> None:
    """``tasks=[hf:NAME]``: a dataset ``datasets`` saved (the hub path takes a name instead), its
    columns mapped to ctx/endings/label, a label as a digit string as HellaSwag's is; the items and
    the scores equal those of the same rows as a .jsonl task."""
    import datasets

    rows = [
        {"ctx": f"def f{i}(x): return", "endings": [" x + 1", " None", " x * 2"], "label": i % 3}
        for i in range(6)
    ]
    theirs = {
        "question": [r["ctx"] for r in rows],
        "options": [r["endings"] for r in rows],
        "answer": [str(r["label"]) for r in rows],
    }
    folder = tmp_path / "mc"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(theirs)}).save_to_disk(str(folder))
    columns = {"ctx": "question", "endings": "options", "label": "answer"}
    scorer = Scorer(LabLM(net), tokenizer, batch_size=8)
    hub = Evaluation(scorer, Corpus(max_documents=6), hub_columns=columns)
    as_file = Evaluation(scorer, Corpus(max_documents=6))
    task = hub.task(f"hf:{folder}")
    assert task.name == "hf:mc"
    assert [(c.ctx, c.endings, c.label) for c in task.items] == [
        (r["ctx"], tuple(r["endings"]), r["label"]) for r in rows
    ]
    assert hub.run(f"hf:{folder}") == as_file.run(str(write_jsonl(tmp_path / "mc.jsonl", rows)))
    with pytest.raises(
        DataError, match="no column 'ctx', 'endings', 'label' .*its columns: question, options, answer"
    ):
        Evaluation(scorer, Corpus(max_documents=6)).task(f"hf:{folder}")
    with pytest.raises(ArgumentError, match="hub_columns"):
        Evaluation(scorer, Corpus(max_documents=6), hub_columns={"context": "question"})

"""The lab's scorers agree with the lm-evaluation-harness, item for item, and the harness runs on a
lab model through the adapter. Needs the optional extra: pip install -e ".[eval]"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_lab.data.corpus import builtin_corpus
from llm_lab.eval import builtin
from llm_lab.eval.export import save_hf_folder
from llm_lab.eval.multiple_choice import choice_metrics, read_choices, score_choices
from llm_lab.eval.scoring import LabLM, Scorer
from llm_lab.eval.text import document_loglikelihoods
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

lm_eval = pytest.importorskip(
    "lm_eval",
    reason='lm_eval is not installed: the parity tests need the optional extra, pip install -e ".[eval]"',
)
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402

from llm_lab.eval.harness import HarnessLM, run_harness_task  # noqa: E402

ITEMS = 24
TASK = """\
task: lab_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scorer, Path, Path]:
    """A random tiny GPT with a BPE tokenizer, its HF export, and a HellaSwag-format task for the
    harness (the first built-in docs_mc items, with their endings)."""
    folder = tmp_path_factory.mktemp("harness")
    tokenizer = FastBPETokenizer.train(300, documents=builtin_corpus()[:10], special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=192, n_layer=2, n_head=2, n_embd=32))
    exported = save_hf_folder(net, tokenizer, folder / "hf")
    data = folder / "items.jsonl"
    items = builtin.docs_mc()[: ITEMS // 2]
    rows = [{"ctx": c.ctx, "endings": list(c.endings), "label": c.label} for c in items]
    # Short endings of different lengths, where dividing by the length (with or without the
    # space) changes which ending wins: what pins acc_norm's definition down.
    words = ["a", "it", "the", "None", "value", "object", "returns", "x.", "file", "str"]
    rows += [
        {"ctx": c.ctx, "endings": [words[(i + k * 3) % len(words)] for k in range(4)], "label": i % 4}
        for i, c in enumerate(items)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (folder / "task.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    return Scorer(LabLM(net.eval()), tokenizer, batch_size=8), exported, folder


@pytest.fixture(scope="module")
def harness_samples(lab: tuple[Scorer, Path, Path]) -> list[dict]:
    """The harness's own HF backend on the exported folder: its per-item results."""
    _, exported, folder = lab
    results = simple_evaluate(
        model="hf",
        model_args=f"pretrained={exported},dtype=float32",
        tasks=["lab_local_mc"],
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        batch_size=8,
        device="cpu",
        log_samples=True,
    )
    assert results is not None
    return sorted(results["samples"]["lab_local_mc"], key=lambda sample: sample["doc_id"])


def test_acc_and_acc_norm_equal_the_harness_item_for_item(
    lab: tuple[Scorer, Path, Path], harness_samples: list[dict]
) -> None:
    """The lab's scorer on the lab model, the harness's HF backend on the export: the same pick for
    every item under both metrics, and log-likelihoods within 1e-4 nats."""
    scorer, _, folder = lab
    items = read_choices(folder / "items.jsonl")
    ours = score_choices(scorer, items)
    theirs = harness_samples
    assert len(theirs) == ITEMS
    for item, mine, sample in zip(items, ours, theirs, strict=True):
        assert float(mine.pred == item.label) == sample["acc"]
        assert float(mine.pred_norm == item.label) == sample["acc_norm"]
        lls = [response[0][0] for response in sample["resps"]]
        assert mine.loglikelihoods == pytest.approx(lls, abs=1e-4)
    metrics = choice_metrics(items, ours)
    assert metrics["acc"] == pytest.approx(sum(s["acc"] for s in theirs) / ITEMS)
    assert metrics["acc_norm"] == pytest.approx(sum(s["acc_norm"] for s in theirs) / ITEMS)


def test_the_harness_runs_its_task_on_a_lab_model_through_the_adapter(
    lab: tuple[Scorer, Path, Path], harness_samples: list[dict]
) -> None:
    scorer, _, folder = lab
    theirs = harness_samples
    metrics = run_harness_task(scorer, str(folder / "task.yaml"))
    assert metrics["n"] == ITEMS
    assert metrics["acc"] == pytest.approx(sum(s["acc"] for s in theirs) / ITEMS)
    assert metrics["acc_norm"] == pytest.approx(sum(s["acc_norm"] for s in theirs) / ITEMS)


def test_rolling_loglikelihood_and_windows_equal_the_harness(lab: tuple[Scorer, Path, Path]) -> None:
    scorer, exported, _ = lab
    documents = [" ".join(builtin_corpus()[3].split()[:300]), "A short one."]
    ids = scorer.tokenizer.encode(documents[0])
    assert len(ids) > 2 * scorer.context_length
    reference = get_rolling_token_windows(ids, scorer.eot_id, scorer.context_length, 1)
    assert scorer.rolling_windows(ids) == [make_disjoint_window(w) for w in reference]
    requests = [Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(documents)]
    hf = HFLM(pretrained=str(exported), dtype="float32", batch_size=4, device="cpu")
    theirs = hf.loglikelihood_rolling(requests, disable_tqdm=True)
    ours = [value for value, _ in document_loglikelihoods(scorer, documents)]
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert HarnessLM(scorer).loglikelihood_rolling(requests) == pytest.approx(theirs, abs=1e-4)


def test_generate_until_stops_at_the_stop_string_as_the_harness_does(lab: tuple[Scorer, Path, Path]) -> None:
    scorer, exported, _ = lab
    hf = HFLM(pretrained=str(exported), dtype="float32", batch_size=1, device="cpu")
    settings = {"until": ["\n\n", "."], "max_gen_toks": 12, "do_sample": False}
    requests = [Instance("generate_until", {}, ("The function", dict(settings)), 0)]
    assert HarnessLM(scorer).generate_until(requests) == hf.generate_until(requests, disable_tqdm=True)

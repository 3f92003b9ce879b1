"""Classification fine-tuning (experiment=classify): the built-in docs_topics set, user files, the
classifier against transformers' *ForSequenceClassification on the same weights, the command line
as README gives it, and bad input as one line naming the key, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from llm_lab.data.classify import ClassifyDataModule
from llm_lab.data.docs_topics import docs_topics, split_by_module
from llm_lab.data.labelled import read_labelled
from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval.export import save_hf_classifier
from llm_lab.eval.heldout import is_heldout
from llm_lab.models.classifier import GPTClassifier
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.nn.lora import add_lora, lora_layers
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer
from tests.conftest import TINY_GPT, run_train

SPAM = [("ham", "Ok lar... Joking wif u oni..."), ("spam", "WINNER!! You have won a prize, call now")] * 20


def test_docs_topics_is_large_varied_and_split_by_module() -> None:
    examples = docs_topics()
    splits = split_by_module(examples)
    assert len(examples) >= 3000 and len({e.label for e in examples}) >= 6
    modules = {name: {e.module for e in rows} for name, rows in splits.items()}
    assert not (
        modules["train"] & modules["val"]
        or modules["train"] & modules["test"]
        or modules["val"] & modules["test"]
    )
    assert not any(is_heldout(e.module) for e in examples)
    assert all({e.label for e in rows} == {e.label for e in examples} for rows in splits.values())


def test_a_headerless_tsv_reads_by_column_number_and_says_so(tmp_path: Path) -> None:
    """The UCI SMS Spam Collection as downloaded: label<TAB>text, no header, quotes as text."""
    spam = tmp_path / "SMSSpamCollection"
    spam.write_text("".join(f'{label}\t{text} "quoted\n' for label, text in SPAM), encoding="utf-8")
    rows = read_labelled(spam, text_column=1, label_column=0)
    assert rows[1] == (f'{SPAM[1][1]} "quoted', "spam") and len(rows) == len(SPAM)
    with pytest.raises(
        ArgumentError,
        match=r"text_column: .* no column 'text' \(its columns are ham, .* numbers them: text_column=1",
    ):
        read_labelled(spam)


def test_csv_and_jsonl_read_the_same_rows_and_name_their_problems(tmp_path: Path) -> None:
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("body,kind\n" + "".join(f'"{t}",{lab}\n' for lab, t in SPAM), encoding="utf-8")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"body": t, "kind": lab}) + "\n" for lab, t in SPAM), encoding="utf-8"
    )
    assert read_labelled(csv_file, "body", "kind") == read_labelled(jsonl, "body", "kind")
    with pytest.raises(
        ArgumentError, match="label_column: .* no column 'label' .*its columns are body, kind"
    ):
        read_labelled(csv_file, "body", "label")
    (tmp_path / "empty.csv").write_text('text,label\n"hi there",a\n"  ",b\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv, row 3: the text is empty"):
        read_labelled(tmp_path / "empty.csv")


def tokenizer() -> FastBPETokenizer:
    return FastBPETokenizer.train(300, documents=[t for _, t in SPAM] * 3, special_tokens=["<|endoftext|>"])


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_the_exported_classifier_predicts_what_the_lab_does(kind: str, tmp_path: Path) -> None:
    """On a padded batch of texts of different lengths, transformers' *ForSequenceClassification
    loaded from the export gives the lab's logits (atol 1e-4), LoRA (the token embedding's too)
    merged in, labels named. The classifier has no LM head, so its embedding is not tied."""
    tok = tokenizer()
    llama = dict(
        norm="rmsnorm", mlp="swiglu", positions="rope", qkv_bias=False, attn_out_bias=False, mlp_bias=False
    )
    torch.manual_seed(0)
    gpt = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size,
            context_length=32,
            n_layer=2,
            n_head=2,
            n_embd=32,
            **(llama if kind == "llama" else {}),
        )
    )  # type: ignore[arg-type]
    net = GPTClassifier.from_gpt(gpt, n_classes=3).eval()
    add_lora(net, rank=2, targets=["qkv", "proj", "tok_emb"])
    with torch.no_grad():
        for layer in lora_layers(net).values():
            layer.lora_B.normal_()
        net.tok_emb.lora_A.normal_()  # the embedding's adapter starts at A = 0
    save_hf_classifier(net, tok, ["a", "b", "c"], tmp_path)
    data = ClassifyDataModule(tok)
    ids, lengths, _ = data.collate([(tok.encode(t), 0) for _, t in SPAM[:4]])
    reference = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reference).__name__ == ("GPT2" if kind == "gpt2" else "Llama") + "ForSequenceClassification"
    assert reference.config.id2label == {0: "a", 1: "b", 2: "c"}
    with torch.no_grad():
        ours, theirs = net(ids, lengths), reference(ids).logits
    assert lengths.min() < lengths.max()  # padding was there to be skipped
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_padding_changes_no_prediction() -> None:
    """Each pooling gives a text the same logits alone as in a padded batch."""
    tok = tokenizer()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, n_layer=1, n_head=2, n_embd=16))
    texts = [tok.encode(t) for _, t in SPAM[:2]]
    ids, lengths, _ = ClassifyDataModule(tok).collate([(t, 0) for t in texts])
    for pooling in ("last", "mean", "first"):
        net = GPTClassifier.from_gpt(gpt, 2, pooling).eval()
        with torch.no_grad():
            alone = torch.cat([net(torch.tensor([t])) for t in texts])
            assert torch.allclose(net(ids, lengths), alone, atol=1e-5), pooling


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a user ran the tiny ``python train.py experiment=gpt``, with a small labelled file."""
    cwd = tmp_path_factory.mktemp("classify")
    done = run_train(*TINY_GPT, "trainer.max_steps=2", "callbacks.evaluation=null", cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [(lab, f"{t} number {i}") for i, (lab, t) in enumerate(SPAM * 2)]
    (cwd / "spam.csv").write_text(
        "text,label\n" + "".join(f'"{t}",{lab}\n' for lab, t in rows), encoding="utf-8"
    )
    return cwd


SMALL = [
    "experiment=classify",
    "init_from=gpt",
    "data.path=spam.csv",
    "data.max_length=32",
    "trainer.max_epochs=1",
    "logger=tensorboard",
]


def test_readme_two_steps_train_a_classifier_with_its_report(workdir: Path) -> None:
    out = workdir / "run"
    done = run_train(*SMALL, f"hydra.run.dir={out}", cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test/acc", "test/f1_macro", "baseline/majority_acc", "baseline/bow_acc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "| spam |" in (out / "report.md").read_text()
    assert json.loads((out / "labels.json").read_text()) == ["ham", "spam"]
    events = b"".join(p.read_bytes() for p in (out / "tensorboard").rglob("events.*"))
    assert b"test/confusion_matrix" in events and b"val/confusion_matrix" in events


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.label_column=text"], "data.label_column"),
        (["data.text_column=body"], "data.text_column"),
        (["data.max_length=64"], "data.max_length"),
        (["finetune.trainable=some"], "finetune.trainable"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(workdir: Path, overrides: list[str], key: str) -> None:
    """The texts as labels (each its own: the val and test labels never occur in training), an
    unknown column, a cap longer than the model's context, a freeze policy that does not exist."""
    done = run_train(*SMALL, *overrides, cwd=workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {key}:"), line


def test_evaluate_writes_a_classifiers_predictions_and_scores(workdir: Path) -> None:
    """evaluate.py on the classifier run of README's two steps: predictions.csv (text, prediction,
    one probability per class), and accuracy/macro-F1 equal to the test split's when given it."""
    run = workdir / "run"
    if not (run / "metrics.json").is_file():
        assert run_train(*SMALL, f"hydra.run.dir={run}", cwd=workdir).returncode == 0
    (workdir / "new.csv").write_text('text\n"WINNER!! You have won"\n"Ok lar"\n', encoding="utf-8")
    out = workdir / "predicted"
    done = run_train(
        f"init_from={run}", "tasks=[new.csv]", f"hydra.run.dir={out}", script="evaluate.py", cwd=workdir
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text,prediction,p_ham,p_spam" and len(lines) == 3
    for line in lines[1:]:
        *_, prediction, p_ham, p_spam = line.split(",")
        assert prediction == ("ham" if float(p_ham) > float(p_spam) else "spam")
        assert float(p_ham) + float(p_spam) == pytest.approx(1.0, abs=1e-6)
    out = workdir / "scored"
    done = run_train(
        f"init_from={run}", "tasks=[spam.csv]", f"hydra.run.dir={out}", script="evaluate.py", cwd=workdir
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())["spam"]
    assert 0.0 <= results["acc"] <= 1.0 and 0.0 <= results["f1_macro"] <= 1.0 and results["n"] == 80


def test_a_sweep_over_the_freeze_policy_trains_what_each_names(workdir: Path) -> None:
    """-m finetune.trainable=head,lora: two runs, each with its own trainable share (the head alone
    trains fewer parameters than the head and the adapters)."""
    done = run_train("-m", *SMALL, "finetune.trainable=head,lora", "hydra.sweep.dir=sweep", cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    shares = [
        json.loads((workdir / "sweep" / job / "metrics.json").read_text())["trainable/share"] for job in "01"
    ]
    assert 0 < shares[0] < shares[1] < 0.5


def test_a_test_label_unseen_in_training_and_a_single_class_are_refused(workdir: Path) -> None:
    (workdir / "one.csv").write_text(
        "text,label\n" + "".join(f'"text {i}",a\n' for i in range(20)), encoding="utf-8"
    )
    (workdir / "other.csv").write_text('text,label\n"a new text",zzz\n', encoding="utf-8")
    for overrides, key, words in [
        (["data.path=one.csv"], "data.label_column", "holds one label"),
        (["data.test_path=other.csv"], "data.test_path", "'zzz' of the test split never occurs"),
    ]:
        done = run_train(*SMALL, *overrides, cwd=workdir)
        assert done.returncode == 2, done.stderr[-2000:]
        [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: {key}:") and words in line, line


def test_a_lora_run_resumes_and_its_checkpoint_loads_merged(workdir: Path) -> None:
    """A LoRA classifier resumes from its checkpoint like any run, and evaluate.py's loader rebuilds
    it with the adapters merged: the same logits as the run's exported HF folder (atol 1e-4)."""
    from llm_lab.models.pretrained import load_model

    out = workdir / "lora_run"
    first = run_train(*SMALL, "finetune.trainable=lora", f"hydra.run.dir={out}", cwd=workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_train(
        *SMALL,
        "finetune.trainable=lora",
        "trainer.max_epochs=2",
        f"ckpt_path={out}",
        f"hydra.run.dir={out}",
        cwd=workdir,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    loaded = load_model(out)
    reference = AutoModelForSequenceClassification.from_pretrained(out / "hf").eval()
    ids = torch.tensor([loaded.tokenizer.encode("WINNER!! You have won a prize")])
    with torch.no_grad():
        assert torch.allclose(loaded.net.eval()(ids), reference(ids).logits, atol=1e-4)


def test_a_saved_hugging_face_dataset_reads_its_label_names(tmp_path: Path) -> None:
    """A folder ``save_to_disk`` wrote, its label a ClassLabel: the rows are the names, as in the CSV."""
    import datasets

    features = datasets.Features(
        {"sms": datasets.Value("string"), "y": datasets.ClassLabel(names=["ham", "spam"])}
    )
    rows = {"sms": [t for _, t in SPAM], "y": [["ham", "spam"].index(lab) for lab, _ in SPAM]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        tmp_path / "ds"
    )
    assert read_labelled(tmp_path / "ds", "sms", "y") == [(t, lab) for lab, t in SPAM]


def test_balancing_by_undersampling_and_by_class_weights(tmp_path: Path) -> None:
    """Undersampling cuts the training split's classes to the rarest's size; class weights are
    n / (classes · count), so each class weighs the same in the loss."""
    skewed = [("ham", f"fine thanks {i}") for i in range(30)] + [
        ("spam", f"win cash now {i}") for i in range(6)
    ]
    (tmp_path / "skewed.csv").write_text(
        "text,label\n" + "".join(f'"{t}",{lab}\n' for lab, t in skewed), encoding="utf-8"
    )
    counts = {}
    for balance in ("undersample", "class_weights"):
        data = ClassifyDataModule(
            tokenizer(),
            path=str(tmp_path / "skewed.csv"),
            balance=balance,
            val_fraction=0.01,
            test_fraction=0.01,
        )
        data.setup()
        labels = [y for _, y in data.encoded["train"]]
        counts[balance] = [labels.count(0), labels.count(1)]
        if balance == "class_weights":
            weights = data.model_kwargs()["class_weights"]
            assert weights[0] * counts[balance][0] == pytest.approx(weights[1] * counts[balance][1])
    assert counts["undersample"][0] == counts["undersample"][1] < counts["class_weights"][0]

"""Instruction tuning: the rows read (files, HF datasets, the built-in pairs), the prompt masked,
the batches padded, the scores, and a tiny model tuned end to end in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from llm_lab.data.instruct import IGNORE, InstructDataModule, collate, encode
from llm_lab.data.instruct_rows import read_examples, read_hf_examples
from llm_lab.data.stdlib_pairs import stdlib_pairs
from llm_lab.data.templates import ALPACA, CHATML
from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval.answers import exact_match, normalize_answer, token_f1
from llm_lab.eval.export import save_hf_folder
from llm_lab.eval.heldout import is_heldout
from llm_lab.eval.judge import judge_prompt, parse_score
from llm_lab.lit.instruct import InstructLM
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.special import add_special_tokens

# Rows shaped as the book's instruction-data.json (Raschka ch. 7.2): input "" when there is none.
BOOK_ROWS = [
    {"instruction": "Evaluate the following phrase.", "input": "freind", "output": "The spelling is friend."},
    {"instruction": "Name a fruit.", "input": "", "output": "An apple."},
]


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    text = "What is the sum of one and two? It is three. Name a fruit: an apple. " * 20
    return BPETokenizer.train(documents=[text], vocab_size=300, special_tokens=["<|endoftext|>"])


def write(path: Path, rows: list) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_builtin_pairs_are_many_split_by_module_and_never_held_out() -> None:
    pairs = stdlib_pairs()
    assert len(pairs) >= 3000
    assert not any(is_heldout(p.module) for p in pairs)
    packages = {s: {p.module.split(".")[0] for p in pairs if p.split == s} for s in ("train", "val", "test")}
    assert all(packages.values())
    assert not (packages["train"] & packages["test"]) and not (packages["val"] & packages["test"])
    kinds = {p.instruction.split()[0] for p in pairs}
    assert kinds == {"What", "Give", "Is", "Which"}
    dumps = [p for p in pairs if p.input == "`inspect.signature`"]
    assert dumps and dumps[0].output.startswith("`signature(obj")


def test_prompt_targets_are_masked_and_response_targets_are_the_next_tokens(tokenizer, tmp_path) -> None:
    examples = read_examples(write(tmp_path / "book.json", BOOK_ROWS))
    assert [e.input for e in examples] == ["freind", ""]
    segments = ALPACA.segments(examples[0].conversation(ALPACA))
    ids, targets = encode(segments, tokenizer)
    learned = [t for t in targets if t != IGNORE]
    assert tokenizer.decode(learned) == "The spelling is friend.<|endoftext|>"
    # Every learned target is the input one position later (the shift of next-token prediction).
    for i, t in enumerate(targets[:-1]):
        if t != IGNORE:
            assert ids[i + 1] == t
    ids_all, targets_all = encode(segments, tokenizer, mask_prompt=False)
    assert ids_all == ids and targets_all == ids[1:] + [learned[-1]]


def test_chat_rows_learn_every_assistant_turn(tokenizer, tmp_path) -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "An apple."},
            {"role": "user", "content": "Another?"},
            {"role": "assistant", "content": "A pear."},
        ]
    }
    (example,) = read_examples(write(tmp_path / "chat.jsonl", [chat]))
    grown = add_special_tokens(tokenizer, CHATML.special_tokens)
    _, targets = encode(CHATML.segments(example.conversation(CHATML)), grown)
    assert grown.decode([t for t in targets if t != IGNORE]) == "An apple.<|im_end|>A pear.<|im_end|>"


@pytest.mark.parametrize(
    ("rows", "row", "key"),
    [
        ([BOOK_ROWS[0], {"instruction": "No answer."}], "row 2", "'output'"),
        ([BOOK_ROWS[0], {"messages": [{"role": "user", "content": "hi"}]}], "row 2", "'messages'"),
        ([{"prompt": "x"}], "row 1", "'instruction'"),
    ],
    ids=["no output", "mixed formats", "neither format"],
)
def test_bad_rows_name_the_file_row_and_key(tmp_path, rows, row, key) -> None:
    path = write(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_examples(path)
    assert str(path) in str(err.value) and row in str(err.value) and key in str(err.value)


def test_a_prompt_longer_than_the_context_is_refused(tokenizer, tmp_path) -> None:
    path = write(tmp_path / "long.json", [{"instruction": "word " * 200, "output": "yes"}] * 20)
    data = InstructDataModule(tokenizer, "alpaca", model_folder="x", path=str(path), max_length=64)
    with pytest.raises(DataError, match=r"long.json, row \d+: the prompt is longer than the context"):
        data.setup("fit")


def test_a_hugging_face_dataset_with_mapped_columns_reads_as_the_file(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    columns = {"prompt": [r["instruction"] for r in BOOK_ROWS], "context": [r["input"] for r in BOOK_ROWS]}
    columns["answer"] = [r["output"] for r in BOOK_ROWS]
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "ds"))
    mapping = {"instruction": "prompt", "input": "context", "output": "answer"}
    from_hub = read_hf_examples(str(tmp_path / "ds"), columns=mapping)
    from_file = read_examples(write(tmp_path / "book.json", BOOK_ROWS))
    assert [(e.instruction, e.input, e.output) for e in from_hub] == [
        (e.instruction, e.input, e.output) for e in from_file
    ]


def test_batches_are_padded_to_their_longest_row_only() -> None:
    x, y = collate([([1, 2, 3], [IGNORE, 3, 4]), ([5], [6])], pad_id=0)
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert y.tolist() == [[IGNORE, 3, 4], [6, IGNORE, IGNORE]]


def test_token_f1_and_exact_match_are_squads() -> None:
    qasper = pytest.importorskip("lm_eval.tasks.qasper.metrics")
    pairs = [
        ("Return the number of items.", "Return the number of items in a container."),
        ("The cat, the hat!", "cat hat"),
        ("nothing alike", "at all"),
        ("", "something"),
    ]
    for prediction, reference in pairs:
        assert token_f1(prediction, reference) == pytest.approx(
            qasper.f1_abstractive([prediction], [reference])
        )
        assert normalize_answer(prediction) == qasper.normalize_answer(prediction)
    assert exact_match("The answer.", "answer") == 1.0 and exact_match("answer", "an answer too") == 0.0


def test_the_data_refuses_no_starting_model_and_an_unknown_template() -> None:
    with pytest.raises(ArgumentError) as err:
        InstructDataModule.check_arguments(model_folder=None)
    assert err.value.arg == "model_folder"
    with pytest.raises(ArgumentError) as err:
        InstructDataModule.check_arguments(model_folder="gpt", template="vicuna")
    assert err.value.arg == "template"


def tuned_on_sums(
    tokenizer: Any, tmp_path: Path, n: int, steps: int, lr: float, **module: Any
) -> tuple[InstructDataModule, InstructLM, L.Trainer]:
    """A 1-layer GPT tuned ``steps`` steps on "Add a and b." for a, b < ``n`` (ChatML, 48 tokens);
    ``module``: InstructLM's settings. The run folder is ``tmp_path``."""
    rows = [{"instruction": f"Add {a} and {b}.", "output": f"{a + b}"} for a in range(n) for b in range(n)]
    data = InstructDataModule(
        tokenizer, "chatml", model_folder="x", path=str(write(tmp_path / "sums.json", rows)), max_length=48,
        batch_size=16,
    )  # fmt: skip
    data.setup("fit")
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=48, n_layer=1, n_head=2, n_embd=32))
    lit = InstructLM(
        None,  # type: ignore[arg-type]
        0,
        data,
        pretrained=net,
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr),
        **module,
    )
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(lit, datamodule=data)
    return data, lit, trainer


def test_tuning_a_tiny_gpt_lowers_the_response_nll_and_writes_the_answers(tokenizer, tmp_path) -> None:
    data, module, trainer = tuned_on_sums(
        tokenizer,
        tmp_path,
        n=10,
        steps=30,
        lr=3e-3,
        max_new_tokens=4,
        max_responses=5,
        judge_init_from=str(judge_folder(tmp_path / "judge")),
    )
    assert (
        module.net.config.vocab_size == data.tokenizer.vocab_size == tokenizer.vocab_size + 2
    )  # <|im_start|>, <|im_end|>
    trainer.test(module, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert set(InstructLM.LOGGED) >= set(metrics)
    assert metrics["test/response_nll"] < metrics["test/response_nll_before"] - 1.0
    answers = [json.loads(line) for line in (tmp_path / "responses.jsonl").read_text().splitlines()]
    assert len(answers) == 5 and {"instruction", "reference", "response", "response_before"} <= set(
        answers[0]
    )
    assert metrics["test/token_f1"] == pytest.approx(sum(a["token_f1"] for a in answers) / 5)
    assert json.loads((tmp_path / "template.json").read_text()) == {"name": "chatml"}
    # The judge (a tiny random model here) was asked about every answer, before and after.
    assert all("judge_score" in a and "judge_score_before" in a for a in answers)
    given = [a["judge_score"] for a in answers if a["judge_score"] is not None]
    assert ("test/judge_score" in metrics) and (
        not given or metrics["test/judge_score"] == pytest.approx(sum(given) / len(given))
    )


def judge_folder(folder: Path) -> Path:
    """A tiny random chat model as a Hugging Face folder with a ChatML chat_template."""
    from test_templates import CHATML_JINJA

    text = "Given the input and correct output, score the model response from 0 to 100. 42 " * 10
    tokenizer = add_special_tokens(
        BPETokenizer.train(documents=[text], vocab_size=300, special_tokens=["<|endoftext|>"]),
        CHATML.special_tokens,
    )
    torch.manual_seed(1)
    net = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=256, n_layer=1, n_head=2, n_embd=16))
    save_hf_folder(net, tokenizer, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHATML_JINJA}))
    return folder


def test_the_judge_is_asked_in_the_books_words_and_its_number_read() -> None:
    prompt = judge_prompt("Name a fruit.", "An apple.", "A pear.")
    assert prompt == (
        "Given the input `Name a fruit.` and correct output `An apple.`, score the model response "
        "`A pear.` on a scale from 0 to 100, where 100 is the best score. "
        "Respond with the integer number only."
    )
    assert [parse_score(t) for t in ("87", "Score: 55.", "101", "none")] == [87, 55, None, None]


def test_lora_tuning_saves_an_adapter_peft_loads_on_the_exported_start(tokenizer, tmp_path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    data, module, _ = tuned_on_sums(
        tokenizer,
        tmp_path,
        n=6,
        steps=5,
        lr=1e-2,
        max_responses=0,
        score_before=False,
        trainable="lora",
        lora={"rank": 4, "alpha": 8, "targets": ["qkv", "fc"]},
    )
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == (tmp_path / "base_hf").resolve()
    ids = torch.tensor([data.encoded["test"][0][0]])
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base_hf").eval()
    with torch.no_grad():
        ours = module.net.eval()(ids)
        with_adapter = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()(ids).logits
    torch.testing.assert_close(with_adapter, ours, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged, ours, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # and the adapters did change the model (peft wrapped `base` in place)
        start = AutoModelForCausalLM.from_pretrained(tmp_path / "base_hf").eval()(ids).logits
    assert not torch.allclose(start, ours, atol=1e-3)

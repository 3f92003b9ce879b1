"""experiment=dpo: preference pairs (files, built-in), their masks, the DPO LightningModule and its
refusals. The loss itself is tested in test_dpo_loss.py."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import run_train
from safetensors.torch import load_file

from llm_lab.data.dpo import PreferenceDataModule, collate, encode_pair
from llm_lab.data.own_answers import own_answers
from llm_lab.data.preference import Pair, builtin_pairs, hub_pairs, read_pairs
from llm_lab.data.stdlib_pairs import module_split, stdlib_pairs
from llm_lab.data.templates import ALPACA, CHATML
from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval.heldout import is_heldout
from llm_lab.lit.dpo import DPO
from llm_lab.models.chat import Chat
from llm_lab.models.gpt import GPT
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

ROWS = [
    ("What is 2+2?", "It is 4.", "It is 5."),
    ("Name a prime.", "Seven.", "Nine."),
    ("What does `heapq.heappush` do?", "Push an item onto the heap.", "Pop the smallest item."),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def as_strings(rows=ROWS) -> list[dict]:
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows]


def as_messages(rows=ROWS) -> list[dict]:
    def one(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    return [
        {"prompt": [{"role": "user", "content": p}], "chosen": one(c), "rejected": one(r)} for p, c, r in rows
    ]


@pytest.fixture(scope="module")
def tokenizer() -> FastBPETokenizer:
    text = " ".join(p.chosen + " " + p.rejected for p in builtin_pairs()[:300])
    return FastBPETokenizer.train(400, text=text, special_tokens=["<|endoftext|>"])


def test_a_file_of_strings_and_one_of_chat_messages_give_the_same_pairs(tmp_path):
    strings = read_pairs(write_jsonl(tmp_path / "s.jsonl", as_strings()))
    messages = read_pairs(write_jsonl(tmp_path / "m.jsonl", as_messages()))
    assert [(p.prompt, p.chosen, p.rejected) for p in strings] == [
        (p.prompt, p.chosen, p.rejected) for p in messages
    ]
    assert strings[1].prompt == ({"role": "user", "content": "Name a prime."},)


def test_a_hugging_face_dataset_with_its_own_column_names_gives_the_same_pairs(tmp_path):
    from datasets import Dataset

    rows = as_messages()
    renamed = {"question": [r["prompt"] for r in rows], "good": [r["chosen"] for r in rows]}
    Dataset.from_dict({**renamed, "bad": [r["rejected"] for r in rows]}).save_to_disk(str(tmp_path / "hub"))
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    from_hub = hub_pairs(str(tmp_path / "hub"), columns=columns)
    from_file = read_pairs(write_jsonl(tmp_path / "m.jsonl", rows))
    assert [(p.prompt, p.chosen, p.rejected) for p in from_hub] == [
        (p.prompt, p.chosen, p.rejected) for p in from_file
    ]
    with pytest.raises(DataError) as err:
        hub_pairs(str(tmp_path / "hub"))  # its columns are not prompt/chosen/rejected
    assert "question" in str(err.value) and "columns=" in str(err.value)


@pytest.mark.parametrize(
    ("row", "key"),
    [
        ({"prompt": "Q", "rejected": "no"}, "'chosen'"),  # a row without chosen
        ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "'chosen' = 'rejected'"),
        (as_messages()[0], "mixed formats"),  # chat messages in a file of strings
    ],
)
def test_a_bad_row_is_named_by_file_row_and_key(tmp_path, row, key):
    path = write_jsonl(tmp_path / "pairs.jsonl", [*as_strings()[:1], row])
    with pytest.raises(DataError) as err:
        read_pairs(path)
    assert f"{path}, row 2: " in str(err.value) and key in str(err.value)


def test_dpo_without_a_starting_model_is_refused_before_any_work(tmp_path):
    result = run_train("experiment=dpo", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and errors[0].startswith("error: init_from:") and "experiment=instruct" in errors[0]
    )


def test_the_mask_covers_the_answer_and_its_end_of_turn_only(tokenizer):
    pair = Pair(({"role": "user", "content": "Name a prime."},), "Seven.", "Nine.", "test", "test")
    (ids, mask), (rejected_ids, rejected_mask) = encode_pair(tokenizer, ALPACA, pair, max_length=200)
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
    assert tokenizer.decode(ids_t[mask_t].tolist()) == "Seven.<|endoftext|>"
    assert tokenizer.decode(ids_t[~mask_t].tolist()).endswith(
        "### Instruction:\nName a prime.\n\n### Response:\n"
    )
    assert ids[: mask.index(True)] == rejected_ids[: rejected_mask.index(True)]  # the same prompt
    batch = collate([((ids, mask), (rejected_ids, rejected_mask))])
    assert batch["ids"].shape == batch["mask"].shape == (2, max(len(ids), len(rejected_ids)))
    assert batch["mask"].sum(1).tolist() == [sum(mask), sum(rejected_mask)]  # padding is never scored
    (cut, cut_mask), _ = encode_pair(tokenizer, ALPACA, pair, max_length=len(ids) - 1)
    assert cut == ids[:-1] and cut_mask == mask[:-1]  # a long answer loses its end, not its prompt


def test_the_builtin_pairs_are_the_instruct_questions_held_out_by_the_same_modules(tokenizer):
    pairs = builtin_pairs()
    assert len(pairs) > 1000
    assert not any(is_heldout(p.group) for p in pairs)
    questions = {(q.instruction, q.output) for q in stdlib_pairs()}
    assert all((p.prompt[0]["content"], p.chosen) in questions and p.chosen != p.rejected for p in pairs)
    data = PreferenceDataModule(tokenizer, max_length=256, seed=42, rejected="sibling")
    data.setup("fit")
    assert {module_split(p.group) for p in data.val_pairs} == {"val", "test"}  # what instruct held out
    assert {module_split(p.group) for p in data.train_pairs} == {"train"}
    packages = {p.group.split(".")[0] for p in data.train_pairs}
    assert not packages & {p.group.split(".")[0] for p in data.val_pairs}  # whole packages held out


def test_own_answers_batched_by_prompt_length_are_the_chats_answers_one_at_a_time(tokenizer):
    """Greedy answers of prompts batched by token length (some share one) equal the chat's, each
    alone with its own cap; sampled ones repeat with the seed and change with it."""
    chat_tokenizer = PreferenceDataModule(tokenizer, template="chatml").tokenizer  # with <|im_end|>
    torch.manual_seed(0)
    net = GPT.from_size("lab-tiny", vocab_size=chat_tokenizer.vocab_size, context_length=96)
    prompts = [p.prompt for p in builtin_pairs()[:12]]
    caps = [3, 9, 1, 0, 12, 5, 7, 2, 9, 4, 6, 8]
    greedy = own_answers(net, chat_tokenizer, CHATML, prompts, caps, temperature=0.0, batch_size=4)
    for prompt, cap, answer in zip(prompts, caps, greedy, strict=True):
        chat = Chat(net, chat_tokenizer, CHATML, max_new_tokens=cap, temperature=0.0)
        assert answer == chat.reply(list(prompt))
    sampled = own_answers(net, chat_tokenizer, CHATML, prompts, caps, seed=1)
    assert sampled == own_answers(net, chat_tokenizer, CHATML, prompts, caps, seed=1)
    assert sampled != own_answers(net, chat_tokenizer, CHATML, prompts, caps, seed=2)


def own_pairs(tokenizer, rejected: str, net: GPT | None = None) -> PreferenceDataModule:
    data = PreferenceDataModule(
        tokenizer,
        template="chatml",
        max_length=96,
        max_pairs=8,
        max_val_pairs=8,
        seed=3,
        rejected=rejected,
        pretrained=net,
    )
    data.setup("fit")
    return data


def test_rejected_own_pairs_each_question_with_the_starting_models_own_answer(tokenizer):
    torch.manual_seed(0)
    net = GPT.from_size("lab-tiny", vocab_size=tokenizer.vocab_size, context_length=96)
    own, both = own_pairs(tokenizer, "own", net), own_pairs(tokenizer, "both", net)
    sibling = own_pairs(tokenizer, "sibling")
    assert net.config.vocab_size == own.tokenizer.vocab_size  # grown by the template's tokens
    # max_val_pairs draws its held-out pairs before any answer is made: the same ones every time.
    assert len(own.val_pairs) == len(sibling.val_pairs) == 8
    assert len({p.group for p in sibling.val_pairs}) > 1  # from several modules, not the first one
    with pytest.raises(ArgumentError, match="max_val_pairs"):
        PreferenceDataModule.check_arguments(max_val_pairs=0)
    for split in ("train_pairs", "val_pairs"):
        mine, theirs = getattr(own, split), getattr(sibling, split)
        # The same questions, chosen answers and split by module (a random net never writes a
        # docstring's sentence, so no pair is left out); the rejected answer is the model's own.
        assert [(p.prompt, p.chosen, p.group) for p in mine] == [
            (p.prompt, p.chosen, p.group) for p in theirs
        ]
        assert all(
            a.rejected != b.rejected and a.rejected != a.chosen for a, b in zip(mine, theirs, strict=True)
        )
        # both: the two pairs of every question (the own answers again: the same seed)
        assert getattr(both, split) == [*theirs, *mine]


def tiny_dpo(tokenizer, tmp_path: Path, **kwargs) -> tuple[DPO, PreferenceDataModule, L.Trainer]:
    torch.manual_seed(0)
    net = GPT.from_size("lab-tiny", vocab_size=tokenizer.vocab_size, context_length=96)
    pairs = [
        {"prompt": f"Q{i}: pick.", "chosen": f"Answer {i} is right.", "rejected": f"No {i}."}
        for i in range(40)
    ]
    data = PreferenceDataModule(
        tokenizer,
        path=str(write_jsonl(tmp_path / "p.jsonl", pairs)),
        max_length=96,
        batch_size=8,
        val_fraction=0.25,
    )
    module = DPO(
        vocab_size=tokenizer.vocab_size,
        pretrained=net,
        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3),
        **kwargs,
    )
    trainer = L.Trainer(
        max_steps=12,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    return module, data, trainer


def test_before_training_the_policy_is_the_reference_and_its_accuracy_is_counted_by_hand(tokenizer, tmp_path):
    module, data, trainer = tiny_dpo(tokenizer, tmp_path)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    for name in ("chosen", "rejected", "margin", "accuracy"):
        assert metrics[f"val/rewards/{name}"] == 0.0
    assert metrics["val/preference_accuracy"] == metrics["val/preference_accuracy_before"]
    assert metrics["val/chosen_nll"] == pytest.approx(metrics["val/chosen_nll_before"])
    # The reference's preference, pair by pair, from the net's cross-entropy on the answer's tokens.
    wins, nll, tokens = 0, 0.0, 0
    for pair in data.val_pairs:
        losses = []
        for ids, mask in encode_pair(tokenizer, ALPACA, pair, 96):
            ids_t = torch.tensor([ids])
            targets = ids_t[:, 1:].masked_fill(~torch.tensor([mask])[:, 1:], -100)
            with torch.no_grad():
                logits = module.reference(ids_t)[:, :-1]
            losses.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum").item())
            tokens += sum(mask) if len(losses) == 1 else 0
        wins += losses[0] < losses[1]
        nll += losses[0]
    assert metrics["val/preference_accuracy_before"] == pytest.approx(wins / len(data.val_pairs))
    assert metrics["val/chosen_nll_before"] == pytest.approx(nll / tokens, rel=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_training_widens_the_margin_and_leaves_the_reference_frozen(tokenizer, tmp_path, loss_type):
    module, data, trainer = tiny_dpo(tokenizer, tmp_path, loss_type=loss_type)
    frozen = {k: v.clone() for k, v in module.reference.state_dict().items()}
    trainer.fit(module, datamodule=data)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/rewards/margin"] > 0 and metrics["val/rewards/accuracy"] > 0.5
    assert metrics["val/preference_accuracy"] > metrics["val/preference_accuracy_before"]
    assert not module.reference.training
    for key, value in module.reference.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    exported = load_file(tmp_path / "model.safetensors")  # the policy alone
    assert exported.keys() == module.net.state_dict().keys()
    torch.testing.assert_close(exported["lm_head.weight"], module.net.lm_head.weight.detach())


def test_rpo_keeps_the_chosen_answers_likelier_than_plain_dpo(tokenizer, tmp_path):
    """model.rpo_alpha adds the chosen answers' NLL to the loss: from the same start, on the same
    pairs, their held-out NLL ends lower than plain DPO's."""
    nll = {}
    for alpha in (0.0, 1.0):
        (tmp_path / str(alpha)).mkdir()
        module, data, trainer = tiny_dpo(tokenizer, tmp_path / str(alpha), rpo_alpha=alpha)
        trainer.fit(module, datamodule=data)
        nll[alpha] = trainer.validate(module, datamodule=data, verbose=False)[0]["val/chosen_nll"]
    assert nll[1.0] < nll[0.0]


# A pretrained GPT as a user makes one (tiny, 2 steps), with a context that holds the Alpaca prompt.
TINY_GPT_RUN = [
    "experiment=gpt",
    "model.net.size=lab-tiny",
    "corpus.max_documents=8",
    "tokenizer.vocab_size=300",
    "data.context_length=192",
    "trainer.max_steps=2",
    "trainer.val_check_interval=1000",
    "trainer.limit_val_batches=1",
    "callbacks.evaluation=null",
    "logger=csv",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where ``python train.py experiment=gpt`` ran once."""
    cwd = tmp_path_factory.mktemp("dpo")
    done = run_train(*TINY_GPT_RUN, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return cwd


def test_the_readme_command_trains_from_the_pretrained_run_and_reports_both_accuracies(workdir):
    """README's command, shrunk by debug=fast, through train.py's own command line."""
    done = run_train(
        "experiment=dpo",
        "init_from=gpt",
        "data.max_length=192",
        "debug=fast",
        "data.max_pairs=16",
        "data.max_val_pairs=16",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (workdir / "outputs" / "dpo" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    for name in (
        "val/rewards/accuracy",
        "val/rewards/margin",
        "val/preference_accuracy_before",
        "val/chosen_nll",
    ):
        assert name in metrics, sorted(metrics)
    assert 0 <= metrics["val/preference_accuracy_before"] <= 1
    assert (run / "model.safetensors").is_file() and (run / "tokenizer.json").is_file()
    assert json.loads((run / "template.json").read_text()) == {"name": "chatml"}  # for the chat


def test_a_bad_file_stops_train_py_with_one_line_and_exit_code_2(workdir, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [*as_strings(), {"prompt": "Q", "rejected": "no"}])
    done = run_train(
        "experiment=dpo", "init_from=gpt", f"data.path={path}", f"hydra.run.dir={tmp_path}/run", cwd=workdir
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{path}, row 4: no 'chosen' key" in errors[0]


def test_conversations_longer_than_the_starting_models_context_are_refused(workdir, tmp_path):
    done = run_train(
        "experiment=dpo", "init_from=gpt", "data.max_length=500", f"hydra.run.dir={tmp_path}/run", cwd=workdir
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.max_length:") and "192" in errors[0]


def test_an_unknown_source_of_rejected_answers_is_refused_by_its_key_before_any_work(
    workdir, tmp_path, tokenizer
):
    done = run_train(
        "experiment=dpo",
        "init_from=gpt",
        "data.rejected=theirs",
        f"hydra.run.dir={tmp_path}/run",
        cwd=workdir,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.rejected:") and "sibling" in errors[0]
    with pytest.raises(ArgumentError) as err:  # own answers without a starting model to give them
        own_pairs(tokenizer, "own")
    assert err.value.arg == "rejected"

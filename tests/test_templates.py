"""Chat templates (llm_lab/data/templates.py), special tokens (tokenizers/special.py) and the
embedding grown to hold them (GPT.resize_vocab)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_lab.data.templates import (
    ALPACA,
    CHATML,
    LLAMA3,
    PHI3,
    TEMPLATES,
    choose_template,
    hf_chat_template,
    render,
    template_record,
)
from llm_lab.errors import ArgumentError, DataError
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.simple import SimpleTokenizer
from llm_lab.tokenizers.special import add_special_tokens

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What does len do?"},
    {"role": "assistant", "content": "Return the number of items."},
    {"role": "user", "content": "And abs?"},
    {"role": "assistant", "content": "Return the absolute value."},
]
# The ChatML program as chat models on the hub ship it (written here from its definition).
CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_alpaca_is_the_books_prompt() -> None:
    # Raschka ch. 7.2, format_input + "\n\n### Response:\n" + output, written out independently.
    entry = {"instruction": "Convert to passive.", "input": "The cat ate.", "output": "It was eaten."}
    book = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        f"completes the request.\n\n### Instruction:\n{entry['instruction']}"
        f"\n\n### Input:\n{entry['input']}\n\n### Response:\n{entry['output']}<|endoftext|>"
    )
    messages = ALPACA.alpaca_messages(entry["instruction"], entry["input"])
    assert render(ALPACA, [*messages, {"role": "assistant", "content": entry["output"]}]) == book
    prompt = render(ALPACA, messages, add_generation_prompt=True)
    assert book.startswith(prompt) and prompt.endswith("### Response:\n")


@pytest.mark.parametrize("template", list(TEMPLATES.values()), ids=list(TEMPLATES))
def test_responses_are_the_assistant_contents_closed_by_end_of_turn(template) -> None:
    segments = template.segments(CHAT)
    responses = [text for text, is_response in segments if is_response]
    assert responses == [m["content"] + template.end_of_turn for m in CHAT if m["role"] == "assistant"]
    assert "".join(t for t, _ in segments) == render(template, CHAT)
    # The prompt of the last answer is exactly what add_generation_prompt renders for the history.
    full = render(template, CHAT)
    assert full.startswith(render(template, CHAT[:-1], add_generation_prompt=True))
    for token in template.special_tokens:
        assert token in full


def test_chatml_matches_transformers_apply_chat_template(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    folder = tmp_path / "hf"
    folder.mkdir()
    Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": CHATML_JINJA,
                "eos_token": "<|im_end|>",
                "tokenizer_class": "PreTrainedTokenizerFast",
                "added_tokens_decoder": {
                    "1": {"content": "<|im_start|>", "special": True},
                    "2": {"content": "<|im_end|>", "special": True},
                },
            }
        )
    )
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    jinja = hf_chat_template(folder)
    assert jinja is not None and jinja.end_of_turn == "<|im_end|>"
    for prompt in (False, True):
        messages = CHAT if not prompt else CHAT[:-1]
        expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        assert render(jinja, messages, prompt) == expected
        assert render(CHATML, messages, prompt) == expected
    assert jinja.segments(CHAT) == CHATML.segments(CHAT)


def test_a_folder_without_chat_template_has_none(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    assert hf_chat_template(tmp_path) is None


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path: Path) -> None:
    # Renders the number of messages first: a longer conversation changes the start of the text.
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"}
        )
    )
    with pytest.raises(DataError, match="tokenizer_config.json"):
        hf_chat_template(tmp_path).segments(CHAT)


def tiny_bpe() -> BPETokenizer:
    return BPETokenizer.train(
        documents=["the cat sat on the mat " * 20], vocab_size=280, special_tokens=["<|endoftext|>"]
    )


@pytest.mark.parametrize("template", [PHI3, CHATML, LLAMA3], ids=lambda t: t.name)
def test_template_tokens_are_added_after_the_last_id(template) -> None:
    tokenizer = tiny_bpe()
    before = tokenizer.vocab_size
    grown = add_special_tokens(tokenizer, template.special_tokens)
    assert grown.vocab_size == before + len(template.special_tokens)
    assert grown.encode("the cat") == tokenizer.encode("the cat")  # old ids keep their meaning
    for token in template.special_tokens:
        assert grown.encode(token) == [grown.token_to_id(token)]
        assert grown.token_to_id(token) >= before


def test_a_word_tokenizer_cannot_hold_template_tokens() -> None:
    words = SimpleTokenizer.from_corpus(["the cat sat"])
    with pytest.raises(ArgumentError) as err:
        add_special_tokens(words, CHATML.special_tokens)
    assert err.value.arg == "template"


@pytest.mark.parametrize("tie", [True, False])
def test_grown_embedding_keeps_old_rows_and_starts_new_ones_at_the_mean(tie: bool) -> None:
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=50, context_length=16, n_layer=1, n_head=2, n_embd=8, tie_embeddings=tie))
    ids = torch.randint(0, 50, (2, 10))
    before = net(ids)
    old_emb, old_head = net.tok_emb.weight.clone(), net.lm_head.weight.clone()
    net.resize_vocab(53)
    assert net.config.vocab_size == 53 and net.tok_emb.weight.shape == (53, 8)
    torch.testing.assert_close(net(ids)[..., :50], before)  # same logits for the old tokens
    torch.testing.assert_close(net.tok_emb.weight[50:], old_emb.mean(0).expand(3, -1))
    torch.testing.assert_close(net.lm_head.weight[50:], old_head.mean(0).expand(3, -1))
    assert (net.lm_head.weight is net.tok_emb.weight) == tie


def test_a_run_is_tuned_further_in_the_template_its_starting_run_was_tuned_with(tmp_path: Path) -> None:
    """An instruct or DPO run from an instruct run reads that run's template.json (its checkpoint
    as well as its folder), whatever ``template=`` says; ``use_model_template=false`` overrides."""
    run = tmp_path / "instruct_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "template.json").write_text(json.dumps(template_record(PHI3)))
    for started_from in (run, run / "checkpoints" / "last.ckpt"):
        assert choose_template("alpaca", str(started_from)) is PHI3
    assert choose_template("alpaca", str(run), use_model_template=False) is ALPACA
    assert choose_template("chatml", str(tmp_path / "no_template_here")) is CHATML

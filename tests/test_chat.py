"""The chat: streamed answers against GPT.generate, the KV cache kept across turns against a fresh
pass, and ``generate.py chat=true`` fed two turns on stdin."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ENV, WORKDIR, command
from test_templates import CHATML_JINJA

from llm_lab.data.templates import CHATML
from llm_lab.eval.export import save_hf_folder
from llm_lab.models.chat import Chat, encode_segments
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.special import add_special_tokens

LLAMA = {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rope", "qkv_bias": False, "tie_embeddings": False}


def tiny_chat_model(variant: dict[str, object]) -> tuple[GPT, BPETokenizer]:
    text = "the cat sat on the mat. the dog sat on the log. " * 20
    tokenizer = BPETokenizer.train(documents=[text], vocab_size=300, special_tokens=["<|endoftext|>"])
    tokenizer = add_special_tokens(tokenizer, CHATML.special_tokens)
    torch.manual_seed(0)
    config = {
        "vocab_size": tokenizer.vocab_size,
        "context_length": 256,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
    }
    return GPT(GPTConfig(**{**config, **variant})).eval(), tokenizer  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=[{}, LLAMA], ids=["gpt2", "llama"])
def model(request: pytest.FixtureRequest) -> tuple[GPT, BPETokenizer]:
    return tiny_chat_model(request.param)


def test_streamed_text_equals_generate_with_the_same_seed(model) -> None:
    net, tokenizer = model
    chat = Chat(net, tokenizer, CHATML, max_new_tokens=30, temperature=1.0, top_k=50,
                generator=torch.Generator().manual_seed(3))  # fmt: skip
    pieces = list(chat.say("the cat"))
    prompt = encode_segments(CHATML, tokenizer, [{"role": "user", "content": "the cat"}], True)
    eot = tokenizer.token_to_id("<|im_end|>")
    out = net.generate(torch.tensor([prompt]), 30, temperature=1.0, top_k=50, eos_id=eot,
                       generator=torch.Generator().manual_seed(3))[0, len(prompt):].tolist()  # fmt: skip
    expected = tokenizer.decode([t for t in out if t != eot])
    assert len(pieces) > 1 and "".join(pieces) == expected


def test_the_cache_kept_across_turns_gives_a_fresh_pass_tokens(model) -> None:
    net, tokenizer = model
    chat = Chat(net, tokenizer, CHATML, max_new_tokens=12, temperature=0.0)
    first = "".join(chat.say("the dog"))
    assert chat.cache[0].length > 0  # the first turn's keys and values are kept
    before = list(chat.ids)
    second = "".join(chat.say("the log"))
    new_turn = chat.ids[len(before) :]
    # The second turn adds the end of the first answer's turn, the user's message and the header.
    assert tokenizer.decode(new_turn).startswith(
        "\n<|im_start|>user\nthe log<|im_end|>\n<|im_start|>assistant\n"
    )
    # Without any cache, the same ids give the same greedy answer.
    segments = CHATML.segments(chat.messages[:-1], add_generation_prompt=True)
    added = "".join(text for text, _ in segments[[r for _, r in segments].index(True) + 1 :])
    prompt_len = len(before) + len(tokenizer.encode(added))
    fresh = net.generate(torch.tensor([chat.ids[:prompt_len]]), 12, temperature=0.0, use_cache=False,
                         eos_id=tokenizer.token_to_id("<|im_end|>"))  # fmt: skip
    answer = [t for t in fresh[0, prompt_len:].tolist() if t != tokenizer.token_to_id("<|im_end|>")]
    assert tokenizer.decode(answer) == second and first


def test_reset_and_system_start_a_new_conversation(model) -> None:
    net, tokenizer = model
    chat = Chat(net, tokenizer, CHATML, max_new_tokens=4, temperature=0.0)
    "".join(chat.say("the cat"))
    chat.reset(system="Be brief.")
    assert chat.ids == [] and chat.messages == [{"role": "system", "content": "Be brief."}]
    "".join(chat.say("the dog"))
    assert tokenizer.decode(chat.ids).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_generate_py_chats_two_turns_on_stdin(tmp_path: Path) -> None:
    """A Hugging Face folder with its own chat_template: two turns piped in, two answers out."""
    net, tokenizer = tiny_chat_model({})
    folder = save_hf_folder(net, tokenizer, tmp_path / "hf")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(chat_template=CHATML_JINJA, eos_token="<|im_end|>")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    done = subprocess.run(
        command("generate.py", f"init_from={folder}", "chat=true", "max_new_tokens=8", "temperature=0"),
        input="the cat\n/system Be brief.\nthe dog\n",
        cwd=WORKDIR, capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answers = done.stdout.splitlines()
    chat = Chat(net, tokenizer, CHATML, max_new_tokens=8, temperature=0.0)
    expected_first = "".join(chat.say("the cat"))
    chat.reset(system="Be brief.")
    expected_second = "".join(chat.say("the dog"))
    assert "\n".join(answers) == f"{expected_first}\n{expected_second}"

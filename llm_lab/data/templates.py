"""Prompt templates: a conversation of messages rendered to the text a chat model reads.

An instruction-tuned model is trained on conversations written in one fixed format, and must be
prompted in that same format (Raschka ch. 7.2; Ouyang et al. 2022). A conversation is a list of
messages ``{"role": "system" | "user" | "assistant", "content": str}``; a template turns it into
text, and knows which parts of that text are the assistant's answers (the *response* the loss is
computed on, Raschka ch. 7.3) and which token ends a turn (where generation stops).

The lab's templates are four formats written out (``TEMPLATES``): the book's Alpaca prompt
(Taori et al. 2023), Phi-3's, ChatML (OpenAI; Qwen) and Llama 3's. A Hugging Face model folder
usually carries its own ``chat_template`` (a Jinja program in ``tokenizer_config.json``), which
:class:`JinjaTemplate` renders in Jinja's sandbox, as ``transformers``' ``apply_chat_template``
does: a template from the hub is untrusted code.

Both kinds render to *segments* ``[(text, is_response), ...]``; the data encodes each segment on its
own and masks the prompt ones (``llm_lab.data.instruct``), and the chat encodes each new turn the
same way, so training and generation see the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from llm_lab.errors import ArgumentError, DataError

ROLES = ("system", "user", "assistant")
Message = dict[str, str]
Segments = list[tuple[str, bool]]  # (text, is it part of an assistant's response)


def check_messages(messages: Sequence[Message]) -> None:
    """Refuse a conversation a template cannot render: unknown roles, non-text content, a system
    message after the first position."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ArgumentError("messages", f"message {i} has no role among {ROLES}", "e.g. {'role': 'user'}")
        if not isinstance(message.get("content"), str):
            raise ArgumentError(
                "messages", f"message {i} has no text 'content'", "give the content as a string"
            )
        if message["role"] == "system" and i > 0:
            raise ArgumentError("messages", f"message {i} is a system message", "put it first, once")


@dataclass(frozen=True)
class Template:
    """A chat format written out: each role's text around the content, and the end-of-turn token.

    ``turn[role]`` is a ``str.format`` pattern with ``{content}``; the assistant's is cut at
    ``{content}``: its head is the *generation prompt* (what a prompt ends with so the model
    answers), and its tail begins with ``end_of_turn``, which closes each response (the model learns
    to emit it, and generation stops there). ``default_system`` is used when a conversation has no
    system message (the book's Alpaca preamble); ``input_format`` joins an Alpaca row's
    ``instruction`` and ``input`` into one user message.
    """

    name: str
    turn: dict[str, str]
    end_of_turn: str
    special_tokens: tuple[str, ...]  # tokens the tokenizer must hold as one id each
    begin: str = ""  # text before the whole conversation (Llama 3's <|begin_of_text|>)
    default_system: str | None = None
    input_format: str = "{instruction}\n\n{input}"

    def __post_init__(self) -> None:
        head, _, tail = self.turn["assistant"].partition("{content}")
        if not tail.startswith(self.end_of_turn):
            raise ArgumentError(
                "turn",
                f"the assistant's turn must end with {self.end_of_turn!r}",
                "put the end-of-turn token right after {content} in turn.assistant",
            )

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> Segments:
        """The conversation as ``[(text, is_response)]``; with ``add_generation_prompt`` it ends
        with the assistant's head, ready for the model to answer."""
        check_messages(messages)
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        head, _, tail = self.turn["assistant"].partition("{content}")
        eot_tail = tail[len(self.end_of_turn) :]  # what follows the end-of-turn token (a newline)
        out: Segments = [(self.begin, False)]
        for message in messages:
            if message["role"] == "assistant":
                out += [(head, False), (message["content"] + self.end_of_turn, True), (eot_tail, False)]
            else:
                out.append((self.turn[message["role"]].format(content=message["content"]), False))
        if add_generation_prompt:
            out.append((head, False))
        return merge_segments(out)

    def alpaca_messages(self, instruction: str, input: str = "") -> list[Message]:
        """An Alpaca row's instruction (and optional input) as one user message."""
        text = self.input_format.format(instruction=instruction, input=input) if input else instruction
        return [{"role": "user", "content": text}]


def merge_segments(segments: Segments) -> Segments:
    """Adjacent segments of the same kind joined, empty ones dropped."""
    out: Segments = []
    for text, is_response in segments:
        if not text:
            continue
        if out and out[-1][1] == is_response:
            out[-1] = (out[-1][0] + text, is_response)
        else:
            out.append((text, is_response))
    return out


def render(
    template: Template | JinjaTemplate, messages: Sequence[Message], add_generation_prompt: bool = False
) -> str:
    """The conversation as one text."""
    return "".join(text for text, _ in template.segments(messages, add_generation_prompt))


# The book's prompt (Raschka ch. 7.2, after Taori et al. 2023): the preamble, "### Instruction:",
# "### Input:" when there is one, "### Response:". The book ends each response with <|endoftext|>.
ALPACA = Template(
    name="alpaca",
    turn={
        "system": "{content}",
        "user": "\n\n### Instruction:\n{content}",
        "assistant": "\n\n### Response:\n{content}<|endoftext|>",
    },
    end_of_turn="<|endoftext|>",
    special_tokens=("<|endoftext|>",),
    default_system=(
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request."
    ),
    input_format="{instruction}\n\n### Input:\n{input}",
)
# Phi-3 (Abdin et al. 2024): <|role|> headers, every turn closed by <|end|>.
PHI3 = Template(
    name="phi3",
    turn={
        "system": "<|system|>\n{content}<|end|>\n",
        "user": "<|user|>\n{content}<|end|>\n",
        "assistant": "<|assistant|>\n{content}<|end|>\n",
    },
    end_of_turn="<|end|>",
    special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
)
# ChatML (OpenAI 2023; Qwen): <|im_start|>role ... <|im_end|>.
CHATML = Template(
    name="chatml",
    turn={role: f"<|im_start|>{role}\n{{content}}<|im_end|>\n" for role in ROLES},
    end_of_turn="<|im_end|>",
    special_tokens=("<|im_start|>", "<|im_end|>"),
)
# Llama 3 (Grattafiori et al. 2024): role headers between <|start_header_id|> and
# <|end_header_id|>, turns closed by <|eot_id|>, the conversation opened by <|begin_of_text|>.
LLAMA3 = Template(
    name="llama3",
    turn={role: f"<|start_header_id|>{role}<|end_header_id|>\n\n{{content}}<|eot_id|>" for role in ROLES},
    end_of_turn="<|eot_id|>",
    special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    begin="<|begin_of_text|>",
)
TEMPLATES = {t.name: t for t in (ALPACA, PHI3, CHATML, LLAMA3)}


class JinjaTemplate:
    """A Hugging Face folder's own ``chat_template`` (Jinja), rendered in Jinja's sandbox with the
    variables ``transformers`` gives it (``messages``, ``add_generation_prompt``, ``bos_token``,
    ``eos_token``, ``raise_exception``).

    Segments come from rendering growing prefixes of the conversation: the text a template adds for
    an assistant message after the generation prompt is that response, cut after ``end_of_turn``
    (the first of the folder's special tokens to follow the content, else its ``eos_token``).
    """

    def __init__(self, source: str, special: dict[str, str], added_tokens: Sequence[str], where: str) -> None:
        self.name, self.source, self.special, self.where = "hf", source, special, where
        self.added_tokens = tuple(added_tokens)

    @cached_property
    def _program(self) -> Any:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.source)
        except TemplateError as err:
            raise DataError(f"{self.where}: its chat_template is not valid Jinja ({err})") from None

    def text(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        from jinja2 import TemplateError

        try:
            return str(
                self._program.render(
                    messages=list(messages), add_generation_prompt=add_generation_prompt, **self.special
                )
            )
        except TemplateError as err:
            raise DataError(f"{self.where}: its chat_template refused the conversation ({err})") from None

    @cached_property
    def end_of_turn(self) -> str:
        marker = "\x00answer\x00"
        text = self.text([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}])
        after = text.split(marker, 1)[-1]
        for token in sorted(self.added_tokens, key=len, reverse=True):
            if after.lstrip(" ").startswith(token):
                return token
        return self.special.get("eos_token", "")

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return ()  # the folder's tokenizer already holds its template's tokens

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> Segments:
        check_messages(messages)
        out: Segments = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.text(messages[:i], add_generation_prompt=True)
            full = self.text(messages[: i + 1])
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise DataError(
                    f"{self.where}: its chat_template renders earlier turns differently once later ones "
                    "follow, so prompt and response cannot be told apart (use template=chatml or another "
                    "of the lab's templates)"
                )
            answer = full[len(prompt) :]
            cut = (
                answer.find(self.end_of_turn) + len(self.end_of_turn)
                if self.end_of_turn in answer
                else len(answer)
            )
            out += [(prompt[len(done) :], False), (answer[:cut], True), (answer[cut:], False)]
            done = full
        rest = self.text(messages, add_generation_prompt=add_generation_prompt)
        if not rest.startswith(done):
            raise DataError(f"{self.where}: its chat_template renders the last turn inconsistently")
        out.append((rest[len(done) :], False))
        return merge_segments(out)

    def alpaca_messages(self, instruction: str, input: str = "") -> list[Message]:
        return [{"role": "user", "content": f"{instruction}\n\n{input}" if input else instruction}]


def hf_chat_template(folder: str | Path) -> JinjaTemplate | None:
    """The ``chat_template`` of a Hugging Face folder (in ``tokenizer_config.json`` or
    ``chat_template.jinja``), None when it has none."""
    from llm_lab.tokenizers.base import read_json

    folder = Path(folder)
    config_file = folder / "tokenizer_config.json"
    config = read_json(config_file, "a tokenizer_config.json") if config_file.is_file() else {}
    source = config.get("chat_template")
    if (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(source, list):  # several named templates: the default one
        source = next((t.get("template") for t in source if t.get("name") == "default"), None)
    if not isinstance(source, str) or not source.strip():
        return None
    special = {}
    for key in ("bos_token", "eos_token"):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            special[key] = value
    added = [
        t.get("content", "") for t in config.get("added_tokens_decoder", {}).values() if isinstance(t, dict)
    ]
    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_file.is_file():
        added += [t["content"] for t in read_json(tokenizer_file, "a tokenizer.json").get("added_tokens", [])]
    return JinjaTemplate(source, special, [t for t in added if t], str(config_file))


def choose_template(
    name: str, model_folder: str | Path | None = None, use_model_template: bool = True
) -> Template | JinjaTemplate:
    """The template a run uses: with ``use_model_template``, the one the starting model was tuned
    with (:func:`model_template`: an instruct run's ``template.json``, a Hugging Face folder's own
    ``chat_template``), else the lab's template ``name`` (one of :data:`TEMPLATES`)."""
    if model_folder is not None and use_model_template:
        own = model_template(model_folder)
        if own is not None:
            return own
    if name not in TEMPLATES:
        raise ArgumentError("template", f"unknown template {name!r}", f"use one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def template_record(template: Template | JinjaTemplate) -> dict[str, Any]:
    """What a run folder's ``template.json`` keeps of its template: a lab template's name, or a
    Hugging Face folder's Jinja source and special tokens."""
    if isinstance(template, Template):
        return {"name": template.name}
    return {
        "name": "hf",
        "chat_template": template.source,
        "special": template.special,
        "added_tokens": list(template.added_tokens),
    }


def read_template(path: str | Path) -> Template | JinjaTemplate:
    """The template a ``template.json`` names (see :func:`template_record`), checked as data."""
    from llm_lab.tokenizers.base import read_json

    record = read_json(path, "a template.json written by train.py experiment=instruct")
    name = record.get("name") if isinstance(record, dict) else None
    if name in TEMPLATES:
        return TEMPLATES[name]
    source, special, added = (record.get(k) for k in ("chat_template", "special", "added_tokens"))
    if (
        name != "hf"
        or not isinstance(source, str)
        or not isinstance(special, dict)
        or not all(isinstance(v, str) for v in special.values())
        or not isinstance(added, list)
        or not all(isinstance(t, str) for t in added)
    ):
        raise DataError(
            f"{path}: not a template record (a name among {', '.join(TEMPLATES)}, or hf with its "
            "chat_template)"
        )
    return JinjaTemplate(source, special, added, str(path))


def model_template(model: str | Path) -> Template | JinjaTemplate | None:
    """The template a model was tuned with: its run folder's ``template.json`` (``model`` a run
    folder or one of its checkpoints), or a Hugging Face folder's own ``chat_template``; None if
    neither says."""
    path = Path(model).expanduser()
    folder = path.resolve().parent.parent if path.is_file() else path
    if (folder / "template.json").is_file():
        return read_template(folder / "template.json")
    if (folder / "config.json").is_file():
        return hf_chat_template(folder)
    return None

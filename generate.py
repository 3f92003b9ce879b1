"""Continue a prompt with a trained GPT: ``python generate.py ckpt_path=<run dir> prompt="..."``,
or talk to an instruction-tuned one: ``python generate.py init_from=<run or HF folder> chat=true``.

The model comes from a ``train.py experiment=gpt`` run — ``ckpt_path`` is a run directory (the
checkpoint of its ``checkpoints/`` with the highest training step, ``last.ckpt`` on a tie) or a
checkpoint file, as for ``train.py`` — rebuilt from the plain settings saved in the checkpoint and
read with ``weights_only=True`` (see ``llm_lab.run_dir``: nothing in a run folder is executed), with
the run's ``tokenizer.json``. Or from a Hugging Face folder (``hf_path=``, with a ``tokenizer.json``
beside it or given by ``tokenizer_path=``). Sampling settings are those of
:meth:`llm_lab.models.gpt.GPT.generate`.

``init_from`` takes either kind of folder (or a checkpoint) and the model's chat template with it:
the ``template.json`` of an ``experiment=instruct`` run, or a Hugging Face folder's own
``chat_template`` (``template=NAME`` for a model that has neither). With a template, ``prompt=`` is
one user message answered once, and ``chat=true`` a conversation on the terminal
(``llm_lab.app.chat``): answers streamed token by token, the KV cache kept across turns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from llm_lab.app.shell import Terminated, entry_point, seen, signal_number, starting

with starting():  # Ctrl-C while torch loads is one line too
    import torch
    from omegaconf import DictConfig
    from torch import Tensor

    from llm_lab.app.chat import chat_loop
    from llm_lab.app.preflight import Setting, device_problems, memory_problem, preflight
    from llm_lab.console import for_terminal
    from llm_lab.data.templates import TEMPLATES, JinjaTemplate, Template, model_template
    from llm_lab.errors import ArgumentError, ConfigError, DataError, Interrupted
    from llm_lab.models import GPT, load_hf
    from llm_lab.models.chat import Chat
    from llm_lab.models.pretrained import load_model
    from llm_lab.run_dir import checkpoint_path, checkpoint_step, load_net
    from llm_lab.tokenizers.base import Tokenizer
    from llm_lab.tokenizers.build import load_tokenizer
    from llm_lab.tokenizers.simple import ENDOFTEXT
    from llm_lab.tokenizers.special import add_special_tokens


def check_model_folder(key: str, path: Path) -> None:
    """Refuse a folder given to ``key`` (``ckpt_path`` or ``hf_path``) that is the other kind of
    model folder, or neither: a run folder has ``checkpoints/``, a Hugging Face one ``config.json``."""
    if not path.is_dir():
        return  # a .ckpt file, a hub name, or nothing: the loaders name what is wrong with those
    is_run, is_hf = (path / "checkpoints").is_dir(), (path / "config.json").is_file()
    if key == "ckpt_path" and is_hf and not is_run:
        raise ConfigError(
            key, f"{path} is a Hugging Face model folder, not a run folder", f"use hf_path={path}"
        )
    if key == "hf_path" and is_run and not is_hf:
        raise ConfigError(
            key, f"{path} is a train.py run folder, not a Hugging Face one", f"use ckpt_path={path}"
        )
    if not is_run and not is_hf:
        raise ConfigError(
            key,
            f"{path} is not a run folder (no checkpoints/ in it) nor a Hugging Face model folder "
            "(no config.json)",
            "ckpt_path= takes a train.py run folder, outputs/<experiment>/runs/<time>, or a .ckpt file; "
            "hf_path= a Hugging Face model folder with config.json + model.safetensors",
        )


def load_model_and_tokenizer(cfg: DictConfig) -> tuple[GPT, Tokenizer]:
    """The GPT and tokenizer named by ``init_from`` / ``ckpt_path`` / ``hf_path`` / ``tokenizer_path``."""
    if sum(cfg[key] is not None for key in ("init_from", "ckpt_path", "hf_path")) != 1:
        raise ConfigError(
            "init_from",
            "give exactly one of init_from, ckpt_path and hf_path",
            "init_from=<run folder, .ckpt or Hugging Face folder>",
        )
    if cfg.init_from is not None:
        try:
            start = load_model(cfg.init_from, cfg.tokenizer_path)
        except ArgumentError as err:
            raise ConfigError(err.arg, err.problem, err.fix) from None
        parameters = sum(p.numel() for p in start.net.parameters()) / 1e6
        print(f"loaded {cfg.init_from}: {parameters:.3g} M parameters", file=sys.stderr, flush=True)
        return start.net, start.tokenizer
    key = "ckpt_path" if cfg.ckpt_path is not None else "hf_path"
    check_model_folder(key, Path(cfg[key]))
    if cfg.ckpt_path is not None:
        net, run_dir = load_net(cfg.ckpt_path)
        if not isinstance(net, GPT):
            raise DataError(f"{cfg.ckpt_path} holds a {type(net).__name__}, not a GPT")
        model, default_tokenizer = net, run_dir / "tokenizer.json"
        file = checkpoint_path(cfg.ckpt_path)
        loaded = f"{file} (step {checkpoint_step(file)})"
    else:
        model = load_hf(cfg.hf_path)
        default_tokenizer = Path(cfg.hf_path) / "tokenizer.json"
        loaded = f"{cfg.hf_path} (Hugging Face)"
    if cfg.tokenizer_path is None and not default_tokenizer.is_file():
        raise ConfigError(
            "tokenizer_path",
            f"no tokenizer.json beside the model in {default_tokenizer.parent}",
            "give the tokenizer the model was trained with: tokenizer_path=<its tokenizer.json>",
        )
    try:
        tokenizer = load_tokenizer(cfg.tokenizer_path or default_tokenizer)
    except DataError as err:  # the file the user gave: name the setting, too
        if cfg.tokenizer_path is None:
            raise
        raise ConfigError(
            "tokenizer_path", str(err), "give the tokenizer.json the model was trained with"
        ) from None
    try:
        model.check_vocab(tokenizer.vocab_size)
    except ArgumentError as err:  # the tokenizer, not the model, is what the user chose here
        raise ConfigError("tokenizer_path", err.problem, err.fix) from None
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    tokens = f"{tokenizer.vocab_size:,}-token {cfg.tokenizer_path or default_tokenizer}"
    print(f"loaded {loaded}: {parameters:.3g} M parameters, {tokens}", file=sys.stderr, flush=True)
    return model, tokenizer


# The keys of conf/generate.yaml that take a number or true/false (see config.check_settings); the
# ranges of top_p and temperature are GPT.generate's own checks.
SETTINGS = {
    "max_new_tokens": Setting("int", "e.g. max_new_tokens=100", at_least=1),
    "num_samples": Setting("int", "e.g. num_samples=1", at_least=1),
    "temperature": Setting("float", "0 is greedy, e.g. temperature=0.8", at_least=0),
    "top_k": Setting("int | None", "e.g. top_k=40, or null for every token", at_least=1),
    "top_p": Setting("float | None", "e.g. top_p=0.9, or null for no nucleus"),
    "seed": Setting("int", "e.g. seed=0"),
    "use_cache": Setting("bool", "use_cache=true or use_cache=false"),
    "progress_every_s": Setting("float", "seconds between progress lines, e.g. 10", at_least=0),
    "chat": Setting("bool", "chat=true talks on the terminal, chat=false answers prompt= once"),
    "template": Setting(
        "str | None", "a template name, or null for the model's own", choices=tuple(TEMPLATES)
    ),
}


def find_template(cfg: DictConfig) -> Template | JinjaTemplate | None:
    """``template=NAME``, else the template the model was tuned with (None: plain continuation)."""
    if cfg.template is not None:
        return TEMPLATES[cfg.template]
    model = cfg.init_from or cfg.ckpt_path or cfg.hf_path
    template = model_template(model) if model is not None else None
    if template is None and cfg.chat:
        raise ConfigError(
            "template",
            f"{model} has no chat template (no template.json of experiment=instruct, no chat_template)",
            f"name one: template={'|'.join(TEMPLATES)}",
        )
    return template


def answers(
    cfg: DictConfig, model: GPT, tokenizer: Tokenizer, template: Template | JinjaTemplate
) -> list[str]:
    """The chat on the terminal (``chat=true``; nothing is returned), or ``num_samples`` answers
    to ``prompt`` as one user message, in the model's template."""
    tokenizer = add_special_tokens(tokenizer, template.special_tokens)
    model.resize_vocab(tokenizer.vocab_size)  # a template new to the model: its tokens start at the mean
    sampling = {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p}
    generator = torch.Generator(cfg.device).manual_seed(cfg.seed)
    chat = Chat(model, tokenizer, template, cfg.max_new_tokens, generator=generator, **sampling)
    if cfg.chat:
        chat_loop(chat)
        return []
    return [chat.reply([{"role": "user", "content": cfg.prompt}]) for _ in range(cfg.num_samples)]


def generate(cfg: DictConfig) -> list[str]:
    """``num_samples`` continuations of ``cfg.prompt``, decoded to text (answers, for a model with a
    chat template; none after a ``chat=true`` conversation)."""
    preflight(cfg, SETTINGS, checks=[device_problems])
    model, tokenizer = load_model_and_tokenizer(cfg)
    device = torch.device(cfg.device)
    model.to(device).eval()
    template = find_template(cfg)
    if template is not None:
        return answers(cfg, model, tokenizer, template)
    prompt_ids = tokenizer.encode(cfg.prompt)
    if not prompt_ids:
        raise ConfigError("prompt", "the prompt encodes to no tokens", 'give some text, e.g. "The"')
    too_big = memory_problem(
        "num_samples",
        cfg.num_samples * model.generation_bytes(len(prompt_ids) + cfg.max_new_tokens),
        device,
        "lower num_samples or max_new_tokens",
    )
    if too_big is not None:
        raise too_big
    idx = torch.tensor([prompt_ids] * cfg.num_samples, device=device)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    steps = model.stream(
        idx,
        cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        eos_id=tokenizer.token_to_id(ENDOFTEXT),
        use_cache=cfg.use_cache,
        generator=generator,
    )
    new: list[Tensor] = []

    def texts() -> list[str]:
        return [tokenizer.decode(row.tolist()) for row in torch.cat([idx, *new], dim=1)]

    try:
        for next_id in with_progress(steps, cfg.max_new_tokens, cfg.progress_every_s):
            new.append(next_id[:, None])
    except (KeyboardInterrupt, Terminated) as stop:  # the text so far is still worth showing
        seen()
        show(texts())
        made = f"{len(new):,} of {cfg.max_new_tokens:,} new tokens"
        raise Interrupted(signal_number(stop), f"after {made}") from None
    return texts()


def with_progress(steps: Iterator[Tensor], total: int, every_s: float) -> Iterator[Tensor]:
    """``steps`` as they come, with a line on stderr every ``every_s`` seconds: thousands of tokens
    on a CPU take minutes, and the text is printed only at the end."""
    started = last = time.monotonic()
    for n, step in enumerate(steps, start=1):
        yield step
        now = time.monotonic()
        if now - last >= every_s:
            rate = n / (now - started)
            print(f"generated {n:,} of {total:,} tokens ({rate:,.0f} tokens/s)", file=sys.stderr, flush=True)
            last = now


@entry_point("generate", run_folder=False)
def main(cfg: DictConfig) -> None:
    """``python generate.py [key=value ...]``: print the continuations."""
    show(generate(cfg))


def show(texts: list[str]) -> None:
    """The texts on stdout: control characters escaped on a terminal (a model's or a prompt's
    escape sequences would act on it), raw into a file or a pipe."""
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i}")
        print(for_terminal(text, sys.stdout))


if __name__ == "__main__":
    main()

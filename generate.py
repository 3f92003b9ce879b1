"""Continue a prompt with a trained GPT: ``python generate.py ckpt_path=... prompt="..."``.

The model comes from a Lightning checkpoint of ``train.py experiment=gpt`` (its run directory holds
the Hydra config that says how to build the net, and the ``tokenizer.json``), or from a Hugging
Face GPT-2 folder (``hf_path=``; with a ``tokenizer.json`` beside it or given by
``tokenizer_path=``). Sampling settings are those of :meth:`llm_lab.models.gpt.GPT.generate`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from llm_lab.errors import ConfigError, DataError, LabError
from llm_lab.models import GPT
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT


def run_dir_of(ckpt_path: Path) -> Path:
    """``<run>/checkpoints/last.ckpt`` → ``<run>`` (where train.py keeps config and tokenizer)."""
    return ckpt_path.resolve().parent.parent


def load_checkpoint(ckpt_path: Path) -> GPT:
    """Rebuild the GPT of a ``train.py experiment=gpt`` checkpoint and load its weights.

    The checkpoint is read with ``weights_only=True`` (tensors and plain containers only, never
    arbitrary pickled objects); the architecture comes from the run's ``.hydra/config.yaml``.
    """
    if not ckpt_path.is_file():
        raise DataError(f"{ckpt_path}: no such checkpoint")
    config_file = run_dir_of(ckpt_path) / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise DataError(
            f"{config_file} not found: ckpt_path must be <run dir>/checkpoints/*.ckpt of a train.py run"
        )
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    train_cfg = OmegaConf.load(config_file)
    make_net = instantiate(train_cfg.model.net, compile=False)  # a partial, as in NextTokenLM
    model = make_net(vocab_size=checkpoint["hyper_parameters"]["vocab_size"])
    if not isinstance(model, GPT):
        raise DataError(f"{ckpt_path} holds a {type(model).__name__}, not a GPT")
    prefix = "net."
    weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model


def load_model_and_tokenizer(cfg: DictConfig) -> tuple[GPT, HFTokenizer]:
    """The GPT and tokenizer named by ``ckpt_path`` / ``hf_path`` / ``tokenizer_path``."""
    if (cfg.ckpt_path is None) == (cfg.hf_path is None):
        raise ConfigError(
            "ckpt_path",
            "give exactly one of ckpt_path and hf_path",
            "ckpt_path=<run>/checkpoints/last.ckpt or hf_path=<HF GPT-2 folder>",
        )
    if cfg.ckpt_path is not None:
        ckpt_path = Path(cfg.ckpt_path)
        model = load_checkpoint(ckpt_path)
        default_tokenizer = run_dir_of(ckpt_path) / "tokenizer.json"
    else:
        model = GPT.from_hf(cfg.hf_path)
        default_tokenizer = Path(cfg.hf_path) / "tokenizer.json"
    tokenizer_path = Path(cfg.tokenizer_path) if cfg.tokenizer_path else default_tokenizer
    if not tokenizer_path.is_file():
        raise DataError(f"{tokenizer_path}: no tokenizer.json (set tokenizer_path=...)")
    tokenizer = HFTokenizer(tokenizer_path)
    model.check_vocab(tokenizer.vocab_size)
    return model, tokenizer


def generate(cfg: DictConfig) -> list[str]:
    """``num_samples`` continuations of ``cfg.prompt``, decoded to text."""
    model, tokenizer = load_model_and_tokenizer(cfg)
    device = torch.device(cfg.device)
    model.to(device).eval()
    prompt_ids = tokenizer.encode(cfg.prompt)
    if not prompt_ids:
        raise ConfigError("prompt", "the prompt encodes to no tokens", 'give some text, e.g. "The"')
    idx = torch.tensor([prompt_ids] * cfg.num_samples, device=device)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    out = model.generate(
        idx,
        cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        eos_id=tokenizer.token_to_id(ENDOFTEXT),
        use_cache=cfg.use_cache,
        generator=generator,
    )
    return [tokenizer.decode(row.tolist()) for row in out]


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> Any:
    try:
        for i, text in enumerate(generate(cfg)):
            if cfg.num_samples > 1:
                print(f"--- sample {i}")
            print(text)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

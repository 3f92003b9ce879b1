"""A lab model as a complete Hugging Face folder: what ``AutoModelForCausalLM`` *and*
``AutoTokenizer`` load, so that other tools (the lm-evaluation-harness's ``hf`` backend, a
transformers pipeline) read the same model through the same tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from llm_lab.errors import ArgumentError
from llm_lab.eval.scoring import ENDOFTEXT
from llm_lab.models.gpt import GPT
from llm_lab.models.hf import save_hf
from llm_lab.tokenizers.base import Tokenizer


def save_hf_folder(net: GPT, tokenizer: Tokenizer, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (:func:`~llm_lab.models.hf.save_hf`), the
    tokenizer's ``tokenizer.json`` and a ``tokenizer_config.json`` naming ``<|endoftext|>`` as the
    start and end of a document, as GPT-2's does (the harness conditions a document's first token
    on it)."""
    eot = tokenizer.token_to_id(ENDOFTEXT)
    if eot is None:
        raise ArgumentError("tokenizer", f"has no {ENDOFTEXT} token", "use a tokenizer the lab trained")
    folder = Path(folder)
    save_hf(net, folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(bos_token_id=eot, eos_token_id=eot)
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save(folder / "tokenizer.json")
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "model_max_length": net.config.context_length,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return folder

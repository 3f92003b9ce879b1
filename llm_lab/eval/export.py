"""A lab model as a complete Hugging Face folder: what ``AutoModelForCausalLM`` (or, for a
classifier, ``AutoModelForSequenceClassification``) *and* ``AutoTokenizer`` load, so that other
tools (the lm-evaluation-harness's ``hf`` backend, a transformers pipeline) read the same model
through the same tokenizer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import cast

from llm_lab.errors import ArgumentError
from llm_lab.eval.scoring import ENDOFTEXT
from llm_lab.models.classifier import GPTClassifier
from llm_lab.models.gpt import GPT
from llm_lab.models.hf import save_hf, to_hf, write_hf
from llm_lab.nn.lora import merge_lora
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
    save_tokenizer(tokenizer, folder, net.config.context_length)
    return folder


def save_tokenizer(tokenizer: Tokenizer, folder: Path, context_length: int, **special: str) -> None:
    """``tokenizer.json`` and a ``tokenizer_config.json`` naming ``<|endoftext|>`` as the start
    and end of a document (and ``special``'s other roles, such as the pad token)."""
    tokenizer.save(folder / "tokenizer.json")
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        **special,
        "model_max_length": context_length,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")


def save_hf_classifier(
    net: GPTClassifier, tokenizer: Tokenizer, labels: list[str], folder: str | Path
) -> Path:
    """A classifier as ``GPT2ForSequenceClassification`` or ``LlamaForSequenceClassification``
    (LoRA merged into a copy): ``id2label`` names the classes, and ``<|endoftext|>`` pads, which is
    how Hugging Face finds each text's last real token (the lab's ``pooling=last``)."""
    pad = tokenizer.token_to_id(ENDOFTEXT)
    if pad is None:
        raise ArgumentError(
            "tokenizer", f"has no {ENDOFTEXT} token to pad with", "use a tokenizer the lab trained"
        )
    merged = cast(GPTClassifier, merge_lora(copy.deepcopy(net)).cpu())
    hf_config, tensors = to_hf(merged)
    kind = "GPT2" if hf_config["model_type"] == "gpt2" else "Llama"
    hf_config.update(
        architectures=[f"{kind}ForSequenceClassification"],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=pad,
        bos_token_id=pad,
        eos_token_id=pad,
    )
    tensors = {k: v for k, v in tensors.items() if not k.startswith("lm_head")}
    tensors["score.weight"] = merged.score.weight
    folder = Path(folder)
    write_hf(folder, hf_config, tensors)
    save_tokenizer(tokenizer, folder, net.config.context_length, pad_token=ENDOFTEXT)
    return folder

"""What ``init_from`` names, read as data: a lab run folder or checkpoint, or a Hugging Face folder.

``train.py`` starts a run from it (fine-tuning: ``init_from=gpt`` after ``experiment=gpt``, the
application resolving an experiment's name to its newest finished run) and ``evaluate.py`` scores it.

- a run folder of ``train.py experiment=gpt`` (its newest checkpoint) or one of its ``.ckpt``
  files: the GPT is rebuilt from the plain settings saved in the checkpoint
  (:func:`llm_lab.run_dir.load_net`), the tokenizer is the run's ``tokenizer.json``, and the corpus
  is the run's own (its ``corpus`` settings in ``.hydra/config.yaml``), so ``bpb`` scores the run's
  validation split and the unigram baseline is fitted on its training split;
- a Hugging Face GPT-2 or Llama folder (``config.json``, ``model.safetensors``, ``tokenizer.json``)
  or, online, a hub name: the weights are read into the lab's GPT (:mod:`llm_lab.models.hf`) and
  the corpus is the built-in one (with its default split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llm_lab.data.corpus import Corpus
from llm_lab.errors import ArgumentError, DataError
from llm_lab.models.gpt import GPT
from llm_lab.models.hf import load_hf, read_json
from llm_lab.run_dir import load_net
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.build import load_tokenizer
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.simple import ENDOFTEXT


@dataclass
class Loaded:
    """A model to start from or evaluate, the tokenizer it reads text with, and its training corpus."""

    net: GPT
    tokenizer: Tokenizer
    corpus: Corpus
    kind: str  # "run" or "hf"
    start_token: str = ENDOFTEXT  # what stands before a document's first token
    labels: list[str] | None = None  # a classifier's class names (its run's labels.json)
    columns: tuple[str | int, str | int] = ("text", "label")  # a classifier's text and label columns


def start_token(folder: Path) -> str:
    """The token a Hugging Face folder's ``tokenizer_config.json`` begins sequences with (its
    ``bos_token``: ``<|endoftext|>`` for GPT-2, ``<s>`` for Llama), ``<|endoftext|>`` without one."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return ENDOFTEXT
    settings = read_json(config)
    token = settings.get("bos_token") or settings.get("eos_token")
    if isinstance(token, dict):  # an AddedToken written out: {"content": "<s>", ...}
        token = token.get("content")
    return token if isinstance(token, str) and token else ENDOFTEXT


def run_corpus(run_dir: Path) -> Corpus:
    """The corpus a run trained on, from the ``corpus`` settings of its ``.hydra/config.yaml``."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return Corpus()  # a checkpoint copied without its run folder: the built-in corpus
    try:
        saved = OmegaConf.load(config)
        group = "corpus" if "corpus" in saved else "data"  # runs made before the corpus group
        settings = {key: OmegaConf.select(saved, f"{group}.{key}") for key in Corpus.setting_names()}
        return Corpus.from_settings({k: v for k, v in settings.items() if v is not None})
    except (OmegaConfBaseException, ArgumentError) as err:
        raise DataError(f"{config}: the run's corpus settings cannot be used here ({err})") from None


def run_model(run_dir: Path) -> str | None:
    """The LightningModule a run trained (``CBoWModule``), from its ``.hydra/config.yaml`` read as
    plain data; None when the folder has no readable record of it."""
    try:
        target = OmegaConf.select(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), "model._target_")
    except (OSError, OmegaConfBaseException):
        return None
    return str(target).rsplit(".", 1)[-1] if target else None


def run_net(path: Path) -> tuple[GPT, Path]:
    """The GPT (or Llama-style GPT) of a run folder or checkpoint, and the run folder; a run of
    another kind of model (CBoW's word vectors) is refused as the value of ``init_from``."""
    try:
        net, run_dir = load_net(path)
        what = type(net).__name__
    except DataError:
        what = run_model(path if path.is_dir() else path.resolve().parent.parent) or ""
        if what in ("", "NextTokenLM", "MaskedTokenLM"):  # a language model's run, damaged
            raise
        net = None
    if not isinstance(net, GPT):
        raise ArgumentError(
            "init_from",
            f"{path} is a {what} run, not a GPT or Llama-style language model",
            "give a run of experiment=gpt (or a Hugging Face GPT-2/Llama folder)",
        )
    return net, run_dir


def load_model(init_from: str | Path, tokenizer_path: str | Path | None = None) -> Loaded:
    """The model named by ``init_from`` (see the module's docstring) and its tokenizer;
    ``tokenizer_path`` replaces the tokenizer found beside the model."""
    path = Path(init_from).expanduser()
    if path.is_file() or (path / "checkpoints").is_dir():
        net, run_dir = run_net(path)
        beside, corpus, kind = run_dir / "tokenizer.json", run_corpus(run_dir), "run"
    elif path.is_dir() and not (path / "config.json").is_file():
        raise ArgumentError(
            "init_from",
            f"{path} is neither a run folder (no checkpoints/) nor a Hugging Face model folder "
            "(no config.json)",
            "give outputs/<experiment>/runs/<time>, a .ckpt file, or a folder with config.json",
        )
    else:  # a Hugging Face folder, or a hub name (load_hf says which it is not)
        net, corpus, kind = load_hf(init_from), Corpus(), "hf"
        beside = path / "tokenizer.json"
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path)
    elif beside.is_file():
        tokenizer = load_tokenizer(beside)
    elif kind == "hf" and not path.exists():
        tokenizer = HFTokenizer(str(init_from))  # a hub name: its tokenizer from the hub
    else:
        raise DataError(
            f"{beside.parent}: no tokenizer.json beside the model (copy the tokenizer the model was "
            "trained with there, or give tokenizer_path=<its tokenizer.json>)"
        )
    try:
        net.check_vocab(tokenizer.vocab_size)
    except ArgumentError as err:
        raise ArgumentError("tokenizer_path", err.problem, err.fix) from None
    if kind == "hf":
        return Loaded(net, tokenizer, corpus, kind, start_token(path))
    return Loaded(net, tokenizer, corpus, kind, ENDOFTEXT, *classifier_record(run_dir))


def classifier_record(run_dir: Path) -> tuple[list[str] | None, tuple[str | int, str | int]]:
    """A classifier run's class names (``labels.json``) and the columns its data was read from
    (``data.text_column``, ``data.label_column`` of ``.hydra/config.yaml``), read as plain data."""
    labels_file, columns = run_dir / "labels.json", ("text", "label")
    labels = json.loads(labels_file.read_text(encoding="utf-8")) if labels_file.is_file() else None
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise DataError(f"{labels_file}: not a list of class names")
    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        found = (OmegaConf.select(saved, "data.text_column"), OmegaConf.select(saved, "data.label_column"))
        if all(isinstance(c, str | int) for c in found):
            columns = found
    except (OSError, OmegaConfBaseException):
        pass
    return labels, columns

"""Tokenizers of the learning path: regex words (ch. 2.2–2.4), then byte-level BPE (ch. 2.5).

Every tokenizer offers the interface of :class:`~llm_lab.tokenizers.base.Tokenizer`;
:func:`~llm_lab.tokenizers.build.load_tokenizer` reads any file one of them saved.
"""

from llm_lab.tokenizers.base import Tokenizer, tokenizer_hash
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.bpe_fast import BPETrainer, FastBPETokenizer
from llm_lab.tokenizers.build import load_tokenizer
from llm_lab.tokenizers.hf import HFTokenizer
from llm_lab.tokenizers.simple import SimpleTokenizer, Vocabulary, split_words

__all__ = [
    "BPETokenizer",
    "BPETrainer",
    "FastBPETokenizer",
    "HFTokenizer",
    "SimpleTokenizer",
    "Tokenizer",
    "Vocabulary",
    "load_tokenizer",
    "split_words",
    "tokenizer_hash",
]

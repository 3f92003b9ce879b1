"""Tokenizers of the learning path: regex words (ch. 2.2–2.4), then byte-level BPE (ch. 2.5)."""

from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.simple import SimpleTokenizer, Vocabulary, split_words

__all__ = ["BPETokenizer", "SimpleTokenizer", "Vocabulary", "split_words"]

"""Adding the special tokens a chat template needs (``<|im_start|>``, ``<|end|>``...) to a tokenizer.

A template's markers must each be *one* token that ordinary text never produces: the model then
learns one embedding for "a user turn starts here", and generation stops on one id. A pretrained
tokenizer rarely has them, so they are appended after its last id — the ids already trained keep
their meaning — and the model's embedding grows by as many rows
(:meth:`llm_lab.models.gpt.GPT.resize_vocab`).
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_lab.errors import ArgumentError
from llm_lab.tokenizers.base import Tokenizer
from llm_lab.tokenizers.bpe import BPETokenizer
from llm_lab.tokenizers.hf import HFTokenizer


def add_special_tokens(tokenizer: Tokenizer, tokens: Sequence[str]) -> Tokenizer:
    """``tokenizer`` holding each of ``tokens`` as one special id (new ones after the last id).

    The lab's byte-level BPE and Hugging Face tokenizers can; the word tokenizer cannot (it splits
    ``<|im_start|>`` into punctuation and words), and any tokenizer that ends up encoding a token as
    more than one id is refused the same way: an :class:`ArgumentError` on ``template``."""
    missing = [t for t in tokens if tokenizer.token_to_id(t) is None]
    if missing:
        if isinstance(tokenizer, BPETokenizer):
            specials = sorted(tokenizer.special_tokens, key=tokenizer.special_tokens.__getitem__)
            tokenizer = type(tokenizer)(tokenizer.vocab, tokenizer.merges, [*specials, *missing])
        elif isinstance(tokenizer, HFTokenizer):
            from tokenizers import AddedToken

            tokenizer.tokenizer.add_special_tokens(
                [AddedToken(t, special=True, normalized=False) for t in missing]
            )
    for token in tokens:
        if tokenizer.encode(token) != [tokenizer.token_to_id(token)]:
            raise ArgumentError(
                "template",
                f"the {type(tokenizer).__name__} cannot hold {token!r} as one token",
                "use a byte-level BPE or Hugging Face tokenizer (tokenizer=bpe), or template=alpaca",
            )
    return tokenizer

"""llm_lab: a from-scratch LLM laboratory (tokenizers → word2vec → attention → GPT)."""

__version__ = "0.1.0"

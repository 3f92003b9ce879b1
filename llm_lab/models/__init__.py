"""Whole models: plain ``nn.Module``s that know nothing of Lightning."""

from llm_lab.models.gpt import GPT

__all__ = ["GPT"]

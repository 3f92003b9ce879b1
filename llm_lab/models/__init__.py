"""Whole models: plain ``nn.Module``s that know nothing of Lightning.

``load_hf(folder)`` returns the lab's GPT for a Hugging Face GPT-2 or LLaMA folder;
``save_hf(model, folder)`` writes one back.
"""

from llm_lab.models.gpt import GPT
from llm_lab.models.hf import load_hf, save_hf

__all__ = ["GPT", "load_hf", "save_hf"]

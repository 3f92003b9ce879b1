"""The lm-evaluation-harness (Gao et al., EleutherAI) over a lab model, and its tasks by name.

:class:`HarnessLM` implements the harness's ``LM`` interface with the lab's :class:`Scorer`, so
``lm_eval`` can run any of its tasks on any model the lab loads:

- ``loglikelihood``: (context, continuation) pairs, split and batched as :mod:`llm_lab.eval.scoring`
  does (the harness's own conventions);
- ``loglikelihood_rolling``: a whole document, in the disjoint windows the harness uses (every
  token scored once, the first after ``<|endoftext|>``);
- ``generate_until``: greedy decoding until a stop string or ``max_gen_toks`` tokens.

It needs the optional extra: ``pip install -e ".[eval]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from llm_lab.errors import ArgumentError, DataError
from llm_lab.eval.scoring import ENDOFTEXT, Scorer
from llm_lab.eval.text import document_loglikelihoods

MAX_GEN_TOKS = 256  # the harness's default for generate_until


class HarnessLM(LM):  # type: ignore[misc]
    """A :class:`Scorer`'s model behind the harness's ``LM`` interface."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__()
        self.scorer = scorer

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [
            self.scorer.encode_pair(context, continuation) for context, continuation in self._args(requests)
        ]
        return [(result.value, result.is_greedy) for result in self.scorer.loglikelihoods(pairs)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        documents = [text for (text,) in self._args(requests)]
        return [value for value, _ in document_loglikelihoods(self.scorer, documents)]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        return [self._greedy(context, dict(settings)) for context, settings in self._args(requests)]

    @staticmethod
    def _args(requests: list[Any]) -> list[tuple[Any, ...]]:
        return [request.args for request in requests]

    @torch.inference_mode()
    def _greedy(self, context: str, settings: dict[str, Any]) -> str:
        """The most likely continuation of ``context``, cut before the first stop string."""
        until = settings.get("until") or [ENDOFTEXT]
        until = [until] if isinstance(until, str) else list(until)
        budget = int(settings.get("max_gen_toks", MAX_GEN_TOKS))
        scorer, window = self.scorer, self.scorer.context_length
        ids = scorer.tokenizer.encode(context) or [scorer.eot_id]
        start, text = len(ids), ""
        for _ in range(budget):
            inputs = torch.tensor([ids[-window:]], device=scorer.device)
            ids.append(int(scorer.model.logits(inputs)[0, -1].argmax()))
            text = scorer.tokenizer.decode(ids[start:])
            if any(stop in text for stop in until):
                break
        for stop in until:
            text = text.split(stop)[0]
        return text


def run_harness_task(scorer: Scorer, name: str, limit: int | None = None) -> dict[str, float]:
    """The metrics of the harness task ``name`` on ``scorer``'s model. ``name`` is a task the
    harness knows, or the path of a task YAML file (its folder is added to the harness's tasks)."""
    path = Path(name).expanduser()
    include = None
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"{path}: no such task file")
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
            raise DataError(f"{path}: a harness task file needs a 'task: NAME' line")
        name, include = spec["task"], str(path.resolve().parent)
    # A task file is looked up alone: indexing the harness's thousands of tasks takes seconds.
    manager = TaskManager(include_path=include, include_defaults=include is None)
    if name not in manager.all_tasks:
        raise ArgumentError("tasks", f"the harness has no task {name!r}", "see `lm_eval ls tasks`")
    results = simple_evaluate(
        model=HarnessLM(scorer), tasks=[name], limit=limit, task_manager=manager, log_samples=False
    )
    if results is None:  # a non-zero rank under torch.distributed
        return {}
    scores = results["results"][name]
    metrics = {
        key.split(",")[0]: float(value)
        for key, value in scores.items()
        if isinstance(value, (int, float)) and "_stderr" not in key
    }
    metrics["n"] = int(results["n-samples"][name]["effective"])
    return metrics

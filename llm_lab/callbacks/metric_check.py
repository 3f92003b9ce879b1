"""Check at the first validation that the run logs the metric it is judged by (``optimized_metric``).

A misspelt name (``val/lose``) would otherwise show only when the run ends and ``train.py`` looks
the value up: after all the training, in a folder that then holds a finished model marked FAILED.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import lightning as L

from llm_lab.errors import ConfigError


def missing_metric(name: str, logged: Iterable[str]) -> ConfigError:
    """The error for a metric that was not logged, with the closest logged name when one is near."""
    names = sorted(logged)
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    fix = f"did you mean {near[0]}?" if near else f"pick one of {', '.join(names) or 'the logged metrics'}"
    return ConfigError("optimized_metric", f"{name!r} is not logged", fix)


class OptimizedMetricCheck(L.Callback):
    """Raise a :class:`ConfigError` at the end of the first validation of ``fit`` (the sanity check,
    when there is one) when a ``val/`` metric ``name`` is not among the logged metrics. Other
    metrics are looked up when the run ends: a training metric may be logged only at the end of an
    epoch, a test metric only by the test stage."""

    def __init__(self, name: str | None) -> None:
        self.name = name or ""
        self.checked = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checked or not self.name.startswith("val/") or trainer.state.fn != "fit":
            return
        self.checked = True
        if self.name not in trainer.callback_metrics:
            raise missing_metric(self.name, trainer.callback_metrics)

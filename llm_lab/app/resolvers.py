"""The lab's OmegaConf resolvers, used by ``conf/``: ``${cwd:}``, ``${choice:group,default}``,
``${gensim_data:file}`` and ``${half:value}``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def gensim_test_file(name: str) -> str | None:
    """Path of a file in gensim's bundled test data (e.g. ``wordsim353.tsv``), or None without gensim.

    The lab ships no evaluation data it did not make; gensim, when installed, carries the classic
    WordSim-353 and questions-words files, so evaluation works out of the box in the dev install.
    """
    try:
        import gensim
    except ImportError:
        return None
    path = Path(gensim.__file__).parent / "test" / "test_data" / name
    return str(path) if path.is_file() else None


def group_choice(group: str, default: str, _root_: DictConfig) -> str:
    """The option chosen for a config group (``${choice:experiment,train}`` → ``cbow``).

    Read from the composed config's ``hydra.runtime.choices`` while Hydra sets up a run or a sweep,
    and from Hydra's runtime config inside a job (which no longer has a ``hydra`` node); ``default``
    when there is neither (a config composed by a test) or the group is unset.
    """
    choices = OmegaConf.select(_root_, "hydra.runtime.choices")
    if choices is None:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return str(choices.get(group) or default)


def half(value: Any) -> Any:
    """Half of an integer setting, at least 1; anything else is handed on unchanged, for the setting
    it came from to be refused under its own key."""
    return max(value // 2, 1) if isinstance(value, int) and not isinstance(value, bool) else value


def register_resolvers() -> None:
    """Register the resolvers once. ``cwd`` and ``choice`` need no Hydra runtime config, so paths
    built from them also resolve when a sweep computes its directory, before any job has started."""
    resolvers: dict[str, Callable[..., Any]] = {
        "gensim_data": gensim_test_file,
        "cwd": os.getcwd,
        "choice": group_choice,
        "half": half,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)

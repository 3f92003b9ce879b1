"""Config helpers shared by the entry points: OmegaConf resolvers and flattening for loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from llm_lab.errors import LabError


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


def register_resolvers() -> None:
    """``${gensim_data:wordsim353.tsv}`` in a YAML file resolves to gensim's copy, or null."""
    if not OmegaConf.has_resolver("gensim_data"):
        OmegaConf.register_new_resolver("gensim_data", gensim_test_file)


def class_set(*paths: str) -> set[type]:
    """Classes by dotted path, as a set: what FSDP's ``auto_wrap_policy`` takes (YAML has no sets)."""
    from hydra.utils import get_class

    return {get_class(p) for p in paths}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config → ``{"model/embed_dim": 100, ...}`` with scalar leaves (what loggers accept)."""
    flat: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}/"))
    elif isinstance(tree, list | tuple):
        flat[prefix.rstrip("/")] = str(list(tree))
    else:
        flat[prefix.rstrip("/")] = tree if isinstance(tree, int | float | str | bool) else str(tree)
    return flat


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a :class:`LabError` raised inside a constructor comes out as
    itself (Hydra wraps it in an InstantiationException), so train.py can print its one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, LabError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None

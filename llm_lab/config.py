"""Config helpers shared by the entry points: OmegaConf resolvers and flattening for loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from llm_lab.errors import ArgumentError, ConfigError, LabError


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


def leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Every leaf key below a config node, dotted (``["net.n_head", "net.dropout", ...]``)."""
    if not isinstance(node, DictConfig):
        return [prefix.rstrip(".")] if prefix else []
    keys = []
    for key in map(str, node):
        value = node._get_node(key)
        keys += leaf_keys(value, f"{prefix}{key}.") if isinstance(value, DictConfig) else [f"{prefix}{key}"]
    return keys


def config_key(arg: str, node: Any, root: Any = None) -> str:
    """The config key a library argument came from: the one leaf named ``arg`` below ``node``
    (``n_head`` below ``model`` → ``model.net.n_head``), else below ``root``, else ``<node>.<arg>``.

    This is the one place where the library's argument names meet the config's keys.
    """
    base = node._get_full_key(None) if isinstance(node, DictConfig) else ""
    for where, where_base in ((node, base), (root, "")):
        matches = [k for k in leaf_keys(where) if k.rsplit(".", 1)[-1] == arg]
        if len(matches) == 1:
            return f"{where_base}.{matches[0]}" if where_base else matches[0]
    return f"{base}.{arg}" if base else arg


def as_config_error(err: ArgumentError, node: Any, root: Any = None) -> ConfigError:
    """The ConfigError a user sees for a library's ArgumentError raised while building ``node``."""
    return ConfigError(config_key(err.arg, node, root), err.problem, err.fix)


def build(node: Any, root: Any = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with the lab's errors brought to the surface.

    Hydra wraps a constructor's exception in an InstantiationException: a :class:`LabError`
    comes out as itself, and a library :class:`ArgumentError` as a ConfigError naming the key
    (found below ``node``, then below ``root``, the whole config), so train.py can print one line.
    """
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, ArgumentError) as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, LabError | ArgumentError):
            cause = cause.__cause__
        if isinstance(cause, ArgumentError):
            raise as_config_error(cause, node, root) from None
        if cause is None:
            raise
        raise cause from None

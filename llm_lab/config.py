"""Where the config meets the library: building objects from config nodes, and the one mapping from
a library argument to the config key a user sets.

The library (``nn/``, ``models/``, ``tokenizers/``, ``data/``, ``lit/``) raises
:class:`~llm_lab.errors.ArgumentError` naming its own argument; :func:`build`, :func:`call` and
:func:`keyed` turn it into a :class:`~llm_lab.errors.ConfigError` naming the key below the node that
was being built (``n_head`` raised while building ``model`` → ``model.net.n_head``). The key comes from
the node and the argument's name, never from the words of an exception.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from llm_lab.errors import ArgumentError, ConfigError, LabError, UnknownArgument, type_error


@dataclass
class CommandLine:
    """What the command line of the job now running asked for, as the shell found it: the task
    overrides as typed (``+model.net.foo=1``), the option chosen in each config group, and in a
    sweep the overrides this job varies (what names its trial in TensorBoard)."""

    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    swept: list[str] = field(default_factory=list)  # of a sweep's job: the overrides that tell it apart

    def set(self, overrides: list[str], choices: dict[str, str], swept: list[str]) -> None:
        """Replace what the record holds (in place: modules hold this one object)."""
        self.overrides[:] = overrides
        self.choices.clear()
        self.choices.update(choices)
        self.swept[:] = swept


COMMAND_LINE = CommandLine()  # set by llm_lab.app.shell for each job; empty for a config composed in code


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


def plain(node: Any) -> dict[str, Any]:
    """A config node as a plain, resolved dict (``{}`` for None)."""
    container = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


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
    """
    base = node._get_full_key(None) if isinstance(node, DictConfig) else ""
    for where, where_base in ((node, base), (root, "")):
        matches = [k for k in leaf_keys(where) if k.rsplit(".", 1)[-1] == arg]
        if len(matches) == 1:
            return f"{where_base}.{matches[0]}" if where_base else matches[0]
    return f"{base}.{arg}" if base else arg


def as_config_error(err: ArgumentError, node: Any, root: Any = None) -> ConfigError:
    """The ConfigError a user sees for a library's ArgumentError raised while building ``node``
    (an argument to leave out is removed from a composed config with ``~key``)."""
    if isinstance(err, UnknownArgument):
        keys = [config_key(name, node, root) for name in err.names]
        return ConfigError(", ".join(keys), err.problem, leave_out(*keys))
    return ConfigError(source_key(config_key(err.arg, node, root), root), err.problem, err.fix)


def source_key(key: str, root: Any) -> str:
    """The key a user sets for ``key``: the one it copies when its value is only ``${that.key}``
    (``model.trainable: ${finetune.trainable}`` → ``finetune.trainable``), else ``key`` itself."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(root, parent) if isinstance(root, DictConfig) and parent else root
    if not isinstance(node, DictConfig) or name not in node:
        return key
    text = str(node._get_node(name)._value())  # type: ignore[union-attr]
    plain_copy = text.startswith("${") and text.endswith("}") and ":" not in text and text.count("$") == 1
    return text[2:-1] if plain_copy else key


def added_by(key: str) -> str | None:
    """The command-line word that added ``key`` or a key below it (``+model.net.foo=1`` adds
    ``model.net``), or None: a config file set it."""
    for word in COMMAND_LINE.overrides:
        added = word.split("=", 1)[0]
        if added.startswith("+") and f"{added.lstrip('+')}.".startswith(f"{key}."):
            return word
    return None


def leave_out(*keys: str) -> str:
    """How to leave ``keys`` out of the config: drop the ``+key=...`` that added one, else delete it
    with ``~key`` (a config file set it: the tokenizer's ``vocab_size`` in ``experiment=gpt``)."""
    added = {key: added_by(key) for key in keys}
    removed = [f"~{key}" for key, word in added.items() if word is None]
    dropped = [word for word in added.values() if word is not None]
    ways = []
    if removed:
        ways.append(
            f"remove {'it' if len(removed) == 1 else 'them'}: {' '.join(removed)} on the command line"
        )
    if dropped:
        ways.append(f"leave {' '.join(dropped)} off the command line")
    return "; ".join(ways)


@contextmanager
def keyed(node: Any, root: Any = None) -> Iterator[None]:
    """Run library code configured by ``node``; an ArgumentError it raises comes out as a
    ConfigError naming the key (found below ``node``, then below ``root``, the whole config)."""
    try:
        yield
    except ArgumentError as err:
        raise as_config_error(err, node, root) from None


def parameters_of(target: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of a callable, or of the one a dotted ``_target_`` path names ({} when they
    cannot be read): the one place the lab reads signatures to check a config against them."""
    from hydra.utils import get_object

    try:
        return inspect.signature(get_object(target) if isinstance(target, str) else target).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}


def takes_any_keyword(parameters: Mapping[str, inspect.Parameter]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def type_problems(node: Any) -> Iterator[ArgumentError]:
    """What the ``_target_``'s signature rules out, in this node and the nodes below it, each as an
    ArgumentError naming the argument: a value of the wrong type (``model.embed_dim=abc``: a word
    where an integer belongs) and a key it takes no argument for (``+data.foo=1``). Hydra would pass
    either on and the constructor fail somewhere inside."""
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_")
    parameters = parameters_of(target) if isinstance(target, str) else {}
    open_ended = takes_any_keyword(parameters)
    for key in map(str, node):
        if key.startswith("_"):
            continue
        if parameters and not open_ended and key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1)
            hint = f"; the closest is {close[0]}" if close else ""
            yield UnknownArgument([key], f"is not an argument of {str(target).rsplit('.', 1)[-1]}{hint}")
            continue
        if OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            yield from type_problems(value)
        elif key in parameters:
            wrong = type_error(key, value, parameters[key].annotation)
            if wrong is not None:
                yield wrong


def check_types(node: Any) -> None:
    """Raise the first of :func:`type_problems`."""
    for problem in type_problems(node):
        raise problem


def build_each(cfg: DictConfig, group: str) -> list[Any]:
    """The object of every entry of a collection group (``callbacks``, ``logger``); an entry that
    is not a node with a ``_target_`` (``+callbacks.foo=1``) is refused by its key."""
    built = []
    for name, node in (cfg.get(group) or {}).items():
        if node is None:
            continue  # an entry turned off: callbacks.text_samples=null
        if isinstance(node, DictConfig) and "_target_" not in node and not added_by(f"{group}.{name}"):
            continue  # an experiment's settings for an entry the group has not (callbacks=[])
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(
                f"{group}.{name}", f"{node!r} is not a node with a _target_", leave_out(f"{group}.{name}")
            )
        built.append(build(node, cfg))
    return built


def build(node: Any, root: Any = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with the lab's errors brought to the surface.

    Hydra wraps a constructor's exception in an InstantiationException: a :class:`LabError` comes
    out as itself and a library :class:`ArgumentError` as a ConfigError naming the key (see
    :func:`keyed`), so the shell can print one line.
    """
    with keyed(node, root):
        check_types(node)
        try:
            return instantiate(node, **kwargs)
        except InstantiationException as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, LabError | ArgumentError):
                cause = cause.__cause__
            if cause is not None:
                raise cause from None
            if str(node.get("_target_", "")).startswith("llm_lab."):
                raise  # the lab's own classes name their arguments: anything else is a bug to see whole
            # torch's or Lightning's refusal of a value (trainer.devices=two): the user's config is
            # the likely cause, so one line naming the node, with the library's own words.
            key = node._get_full_key(None) or "config"
            raise ConfigError(
                key, " ".join(str(err.__cause__ or err).split()), f"check the {key}.* values"
            ) from None


def call(node: Any, root: Any = None, **objects: Any) -> Any:
    """Construct the ``_target_`` of a flat config node from its plain values and Python
    ``objects`` (which Hydra's instantiate would try to turn into configs: a dataclass, say).
    Errors surface as in :func:`build`."""
    from hydra.utils import get_class

    values = plain(node)
    # Objects go only to a target that takes them (a classifier's data takes no corpus).
    accepted = parameters_of(node._target_)
    given = {k: v for k, v in objects.items() if k in accepted or takes_any_keyword(accepted)}
    with keyed(node, root):
        check_types(node)
        return get_class(values.pop("_target_"))(**values, **given)

"""Where the config meets the library: OmegaConf resolvers, building objects, and error keys.

The library (``nn/``, ``models/``, ``tokenizers/``, ``data/``) raises
:class:`~llm_lab.errors.ArgumentError` naming its own argument; :func:`build` and :func:`keyed` are
the one place that turns it into a :class:`~llm_lab.errors.ConfigError` naming the config key the
user sets (``n_head`` raised while building ``model`` → ``model.net.n_head``).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import shlex
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from llm_lab.errors import ArgumentError, ConfigError, LabError, UnknownArgument, type_error


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
    """The lab's resolvers: ``${gensim_data:wordsim353.tsv}`` (gensim's copy, or null),
    ``${cwd:}`` (where the command was started), ``${choice:group,default}`` (see
    :func:`group_choice`) and ``${half:${data.context_length}}`` (a value that follows another).
    ``cwd`` and ``choice`` need no Hydra runtime config, so paths built from them also resolve when
    a sweep computes its directory, before any job has started."""
    resolvers: dict[str, Callable[..., Any]] = {
        "gensim_data": gensim_test_file,
        "cwd": os.getcwd,
        "choice": group_choice,
        "half": half,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


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
    return ConfigError(config_key(err.arg, node, root), err.problem, err.fix)


def added_by(key: str) -> str | None:
    """The command-line word that added ``key`` or a key below it (``+model.net.foo=1`` adds
    ``model.net``), or None: a config file set it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for word in HydraConfig.get().overrides.task:
            added = word.split("=", 1)[0]
            if added.startswith("+") and f"{added.lstrip('+')}.".startswith(f"{key}."):
                return str(word)
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


def check_complete(cfg: DictConfig) -> None:
    """A ``???`` left unset (a value the config asks the user for, such as ``tokenizer.path`` of
    ``tokenizer=hf``) is a ConfigError naming the key before anything is built: Hydra's instantiate
    would pass it on as the string ``"???"`` or leave the argument at its default, silently."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        others = f"; {', '.join(missing[1:])} too" if missing[1:] else ""
        raise ConfigError(missing[0], "needs a value", f"add {missing[0]}=... to the command line{others}")


@dataclass(frozen=True)
class Setting:
    """A top-level key of a script's config (``seed``, ``train``...), which no ``_target_``'s
    signature types: its type as an annotation (``"int | None"``, read by
    :func:`~llm_lab.errors.type_error`), its range or its allowed words, and the fix to print."""

    kind: str
    fix: str
    at_least: float | None = None
    at_most: float | None = None
    choices: tuple[str, ...] = ()


def check_settings(cfg: DictConfig, table: dict[str, Setting]) -> None:
    """Refuse a top-level value of the wrong type or out of range, naming its key: Hydra reads
    ``train=flase`` as a string, which Python takes as true, and ``seed=abc`` would fail in a
    traceback far from the command line."""
    for key, setting in table.items():
        if key not in cfg:
            continue
        value = cfg[key]
        wrong = type_error(key, value, setting.kind)
        if wrong is not None:
            raise ConfigError(key, wrong.problem, setting.fix)
        if value is None:
            continue
        if setting.choices and value not in setting.choices:
            raise ConfigError(key, f"unknown value {value!r}", f"use one of {', '.join(setting.choices)}")
        if setting.at_least is not None and value < setting.at_least:
            raise ConfigError(key, f"{value} < {setting.at_least:g}", setting.fix)
        if setting.at_most is not None and value > setting.at_most:
            raise ConfigError(key, f"{value} > {setting.at_most:g}", setting.fix)


def check_types(node: Any, exclude: Sequence[str] = ()) -> None:
    """Refuse what the ``_target_``'s signature rules out, in this node and the nodes below it, as
    an ArgumentError naming the argument: a value of the wrong type (``model.embed_dim=abc``: a
    word where an integer belongs) and a key it takes no argument for (``+data.foo=1``). Hydra would
    pass either on and the constructor fail somewhere inside. Keys in ``exclude`` are read by the
    lab itself, not passed on."""
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_")
    parameters: Any = {}
    if isinstance(target, str):
        from hydra.utils import get_object

        try:
            parameters = inspect.signature(get_object(target)).parameters
        except (ImportError, ValueError, TypeError):
            parameters = {}
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key in map(str, node):
        if key.startswith("_") or key in exclude:
            continue
        if parameters and not open_ended and key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1)
            hint = f"; the closest is {close[0]}" if close else ""
            raise UnknownArgument([key], f"is not an argument of {str(target).rsplit('.', 1)[-1]}{hint}")
        if OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            check_types(value)
        elif key in parameters:
            wrong = type_error(key, value, parameters[key].annotation)
            if wrong is not None:
                raise wrong


def check_additions(cfg: DictConfig, overrides: Sequence[str], groups: Collection[str]) -> None:
    """Refuse a key that ``+key=value`` adds where nothing reads it: at the top level (``+seeds=3``)
    or in a node without a ``_target_`` (``+paths.foo=1``). Below a ``_target_`` the constructor's
    signature decides (:func:`check_types`); ``+group=option`` adds a config group, and a new entry
    of ``callbacks`` or ``logger`` is a node of its own, built and checked as one."""
    for word in overrides:
        if not word.startswith("+") or word.startswith("++") or "=" not in word:
            continue
        key = word.split("=", 1)[0].lstrip("+")
        parts = key.split(".")
        if key in groups or (parts[0] in COLLECTIONS and len(parts) > 1):
            continue
        above = [OmegaConf.select(cfg, ".".join(parts[:n])) for n in range(1, len(parts))]
        if any(isinstance(node, DictConfig) and "_target_" in node for node in above):
            continue
        parent = above[-1] if above else cfg
        # The keys beside it, but for itself (the + just put it there): a misspelt one is close.
        siblings = [str(k) for k in parent if str(k) != parts[-1]] if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(parts[-1], siblings, n=1)
        meant = f"; did you mean {'.'.join([*parts[:-1], close[0]])}?" if close else ""
        raise ConfigError(
            key,
            f"no part of the lab reads it (the + added a key the config does not have){meant}",
            f"leave {word} off the command line; --cfg job prints every setting there is",
        )


# Config groups whose node is a collection of nodes to build, each under a name of its own.
COLLECTIONS = ("callbacks", "logger")


def check_chosen(overrides: Sequence[str], needed: Sequence[str]) -> None:
    """Refuse ``group=[]`` or ``~group`` (no option at all) for a group the script cannot do
    without: ``model=[]`` would quietly turn a GPT run into the tokenizer-only stage, ``data=[]``
    fail deep inside."""
    for word in overrides:
        name, _, value = word.partition("=")
        group = name.removeprefix("~")
        if group in needed and (value.strip() == "[]" or name.startswith("~")):
            raise ConfigError(
                group,
                f"{word} leaves no option, and a run needs one",
                f"python {sys.argv[0]} --help lists them",
            )


def check_command_line(cfg: DictConfig, needed: Sequence[str] = ()) -> None:
    """What the command line asked for that the script cannot do: a ``needed`` group left with no
    option (:func:`check_chosen`), a key added where nothing reads it (:func:`check_additions`).
    Outside a Hydra run (``train(cfg)`` from a notebook) there is no command line to check."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        check_chosen(list(hydra_cfg.overrides.task), needed)
        check_additions(cfg, list(hydra_cfg.overrides.task), set(hydra_cfg.runtime.choices))


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


def build(node: Any, root: Any = None, exclude: Sequence[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with the lab's errors brought to the surface.

    Hydra wraps a constructor's exception in an InstantiationException: a :class:`LabError` comes
    out as itself and a library :class:`ArgumentError` as a ConfigError naming the key (see
    :func:`keyed`), so train.py can print one line. Keys in ``exclude`` are not passed on (the
    Trainer's ``gradient_clip_backend``, which the lab reads itself).
    """
    target = node
    if exclude:
        target = OmegaConf.create({k: v for k, v in plain(node).items() if k not in exclude})
    with keyed(node, root):
        check_types(node, exclude)
        try:
            return instantiate(target, **kwargs)
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
            raise refusal(node, str(err.__cause__ or err).strip()) from None


@contextmanager
def refused_by_library(node: DictConfig) -> Iterator[None]:
    """Run library code that checks ``node``'s values only when it uses them (Lightning's
    ``Trainer.fit`` refuses a ``val_check_interval`` longer than an epoch): a ValueError whose
    message names one key of ``node`` comes out as a ConfigError under that key. Any other
    ValueError is a bug, and passes whole."""
    try:
        yield
    except ValueError as err:
        if isinstance(err, ArgumentError | LabError) or key_named_in(node, str(err)) is None:
            raise
        raise refusal(node, str(err).strip()) from None


def refusal(node: DictConfig, message: str) -> ConfigError:
    """A library's refusal of the values of ``node`` (torch's, Lightning's) as a ConfigError under
    the key its message speaks of, else under the node."""
    key = node._get_full_key(None) or "config"
    named = key_named_in(node, message)
    if named is not None:
        return ConfigError(f"{key}.{named}", message, f"check {key}.{named}")
    return ConfigError(key, message, f"check the {key}.* values")


# torch.optim's and Lightning's words for their arguments, where they are not the argument's name.
SPELLED_OUT = {"learning rate": "lr", "epsilon": "eps", "duration": "max_time"}


def key_named_in(node: DictConfig, message: str) -> str | None:
    """The key of ``node`` a library's message speaks of (torch: "Invalid beta parameter at
    index 0" → ``betas``, "Invalid weight_decay value" → ``weight_decay``), or None. A message
    that names several (Lightning's "`val_check_interval` (50) must be ... set
    `limit_val_batches` ...") is about the first: the others are its ways out."""
    at: dict[str, int] = {}  # each word of the message, and where it first comes
    for word in re.finditer(r"[A-Za-z_]+", message):
        at.setdefault(word.group(), word.start())
    for phrase, key in SPELLED_OUT.items():
        if phrase in message:
            at.setdefault(key, message.index(phrase))
    keys = [k for k in map(str, node) if not k.startswith("_")]
    for spelled in (lambda k: k, lambda k: k.rstrip("s")):  # betas: "beta parameter"
        matches = [k for k in keys if spelled(k) in at]
        if matches:
            return min(matches, key=lambda k: at[spelled(k)])
    return None


def call(node: Any, root: Any = None, exclude: Sequence[str] = (), **objects: Any) -> Any:
    """Construct the ``_target_`` of a flat config node from its plain values and Python
    ``objects`` (which Hydra's instantiate would try to turn into configs: a dataclass, say);
    keys in ``exclude`` are left out. Errors surface as in :func:`build`."""
    from hydra.utils import get_class

    values = {k: v for k, v in plain(node).items() if k not in exclude}
    with keyed(node, root):
        check_types(node, exclude)
        return get_class(values.pop("_target_"))(**values, **objects)


def composition_error(err: Exception, overrides: Sequence[str], config_dir: Path, config_name: str) -> str:
    """One line for a command line Hydra cannot compose: an unknown key with the closest valid one
    (Hydra's own advice, ``+key=value``, would add a key nothing reads), an unknown group option
    with the valid ones, or the parser's message."""
    import re

    from hydra import compose, initialize_config_dir

    text = str(err)
    unknown_key = re.search(r"Could not override '([^']+)'", text)
    if unknown_key:
        key = unknown_key.group(1)
        unknown, kept = [key], list(overrides)
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            while True:  # without every unknown key, to know the keys there are
                kept = [o for o in kept if o.split("=", 1)[0].lstrip("+~") not in unknown]
                try:
                    keys = leaf_keys(compose(config_name, overrides=kept))
                    break
                except Exception as again:  # noqa: BLE001 - another unknown key, or give up
                    more = re.search(r"Could not override '([^']+)'", str(again))
                    if more is None or more.group(1) in unknown:
                        keys = []
                        break
                    unknown.append(more.group(1))
        others = f"; {', '.join(unknown[1:])}: no such config key either" if unknown[1:] else ""
        if f"~{key}" in overrides:  # deleted, then set: the order of the words matters
            return f"{key}: removed by ~{key} before it is set (leave one of the two out){others}"
        group, _, sub = key.partition(".")
        owners = [
            option.stem
            for option in sorted((config_dir / group).glob("*.yaml"))
            if sub and OmegaConf.select(OmegaConf.load(option), sub) is not None
        ]
        if owners:  # a setting of another option of the group (tokenizer.min_count of simple)
            of = " or ".join(f"{group}={owner}" for owner in owners)
            fix = "(choose that, or leave it out)"
            return f"{key}: not a setting of the {group} chosen, but of {of} {fix}{others}"
        near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else f"list the keys with: python {sys.argv[0]} --cfg job"
        return f"{key}: no such config key ({hint}){others}"
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        return f"{group}={option}: no such option (one of: {', '.join(options)})"
    return " ".join(text.split())


def plugin_error(err: InstantiationException) -> str:
    """One line for an object Hydra could not build for itself: the lab's own error when one is the
    cause, else the key Hydra names (``full_key: hydra.sweeper.pruner``) and the library's words."""
    import re

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, LabError):
        cause = cause.__cause__
    if cause is not None:
        return str(cause)
    text = str(err)
    key = re.search(r"full_key: (\S+)", text)
    where = key.group(1) if key else "config"
    # Hydra's own text is several lines ("Error in call to target ...:", the cause, the key).
    problem = str(err.__cause__).strip() if err.__cause__ is not None else text.split("\n")[0]
    problem = problem or text.split("\n")[0]
    return f"{where}: {' '.join(problem.split())} (check the {where}.* values)"


# Strings Hydra reads back unchanged without quotes (not null/true/false/inf/nan, nor a number
# such as .5): words and plain paths.
_BARE = re.compile(r"(?:[A-Za-z_/]|\.(?![0-9]))[A-Za-z0-9_\-./]*")
_LITERALS = {"null", "true", "false", "inf", "nan"}


def format_value(value: Any) -> str:
    """A value as the right-hand side of a Hydra override, such that Hydra parses it back equal
    (a path with a space, a comma or a quote is quoted, and escaped where it must be)."""
    from hydra.core.override_parser.types import Quote, QuotedString

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value) and value.lower() not in _LITERALS:
            return value
        return QuotedString(text=value, quote=Quote.single).with_quotes()
    raise TypeError(f"cannot write {value!r} as an override value")


def command_word(key: str, value: Any) -> str:
    """``key=value`` as one word a user can paste into a shell: Hydra reads back ``value``."""
    return shlex.quote(f"{key}={format_value(value)}")


def unwritable(err: OSError, train: bool = True, cfg: DictConfig | None = None) -> str:
    """The line for a folder or file the lab cannot make or write, naming where it is set: the
    key of ``cfg`` whose path holds it when there is one, else every key a train.py path comes from."""
    where = "hydra.run.dir, paths.log_dir or paths.cache_dir" if train else "the path"
    key = path_key(cfg, err.filename) if cfg is not None else None
    return f"{err.filename}: cannot be created or written ({err.strerror}) (choose another: {key or where})"


def path_key(cfg: DictConfig, filename: Any) -> str | None:
    """The config key of the deepest folder that holds ``filename`` (``paths.cache_dir`` over
    ``paths.log_dir`` for a file in the cache; ``hydra.run.dir`` for the run's own folder)."""
    target = Path(str(filename)).resolve()
    found: dict[str, Path] = {}
    for key, value in flatten(plain(cfg)).items():
        if isinstance(value, str) and ("/" in value or value == ".") and key != "paths/root_dir":
            folder = Path(value).expanduser().resolve()
            if folder == target or folder in target.parents:
                found[key.replace("/", ".")] = folder
    if not found:
        return None
    key = max(found, key=lambda k: len(found[k].parts))
    return "hydra.run.dir" if key == "paths.output_dir" else key


def run_cli(main: Callable[[], Any], config_dir: Path, config_name: str) -> None:
    """Run a ``@hydra.main`` entry point; a command line that cannot be composed is one line and
    exit code 2, like every other error of the lab."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors come back here instead of being printed
    try:
        main()
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
        from hydra._internal.utils import get_args_parser

        overrides = get_args_parser().parse_known_args()[0].overrides  # Hydra's own reading of argv
        print(f"error: {composition_error(err, overrides, config_dir, config_name)}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        # A folder that cannot be made or written (hydra.run.dir=/proc/x, a file in its place, a
        # read-only disk): Hydra makes the run folder before any of the lab's code runs.
        if err.filename is None:
            raise
        print(f"error: {unwritable(err, train=config_name == 'train')}", file=sys.stderr)
        sys.exit(2)
    except LabError as err:  # raised by a plugin's own check (the Optuna sweeper's setup)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        # Hydra's refusal of a group override it cannot read (model=null): say which options exist.
        if not str(err).startswith("Config group override"):
            raise
        from hydra._internal.utils import get_args_parser

        overrides = get_args_parser().parse_known_args()[0].overrides
        nulls = [
            o.split("=", 1)[0] for o in overrides if o.endswith("=null") and "." not in o.split("=", 1)[0]
        ]
        group = nulls[0] if nulls else "a config group"
        print(
            f"error: {group}=null: a config group takes one of its options, not null (to run without "
            f"it: ~{group if nulls else '<group>'}; python {sys.argv[0]} --help lists the options)",
            file=sys.stderr,
        )
        sys.exit(2)
    except InstantiationException as err:
        # Hydra builds its plugins and what they hold (the Optuna sweeper's sampler and pruner)
        # with instantiate, outside build(): a bad hydra.sweeper.* value comes here, wrapped.
        print(f"error: {plugin_error(err)}", file=sys.stderr)
        sys.exit(2)

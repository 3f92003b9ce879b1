"""The lab's small set of exceptions, and who raises which.

- The library (``nn/``, ``models/``, ``tokenizers/``, ``data/``) knows nothing of Hydra: it raises
  :class:`ArgumentError` naming *its own* argument (``n_head``), usable from a notebook as a plain
  ``ValueError``.
- The one place that builds objects from the config (:mod:`llm_lab.config`) turns an
  ``ArgumentError`` into a :class:`ConfigError` naming the full config key (``model.net.n_head``).
- :class:`DataError` is input that cannot be used (a corpus, a checkpoint, a tokenizer file): its
  message names the file.

``train.py`` and ``generate.py`` print a :class:`LabError` as one line and exit with code 2.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar


class ArgumentError(ValueError):
    """A bad argument to a library function or class: ``ArgumentError("n_head", "n_embd=30 is not
    divisible by n_head=4", "pick a divisor")`` reads ``n_head: n_embd=30 is not divisible by
    n_head=4 (pick a divisor)``."""

    def __init__(self, arg: str, problem: str, fix: str = "") -> None:
        self.arg, self.problem, self.fix = arg, problem, fix
        super().__init__(f"{arg}: {problem}" + (f" ({fix})" if fix else ""))


class UnknownArgument(ArgumentError):
    """Arguments the function does not take at all (``vocab_size`` given to the regex-word
    tokenizer), all named at once: the fix is to leave them out, which a config spells ``~key``."""

    def __init__(self, names: list[str], problem: str) -> None:
        super().__init__(", ".join(names), problem, "leave it out" if len(names) == 1 else "leave them out")
        self.names = names


class LabError(Exception):
    """Base class of every error the lab reports to a user as one line."""


class ConfigError(LabError, ValueError):
    """An impossible or invalid configuration value, named by its full key.

    ``ConfigError("model.net.n_head", "n_embd=30 is not divisible by n_head=4", "pick a divisor")``
    reads ``model.net.n_head: n_embd=30 is not divisible by n_head=4 (pick a divisor)``.
    """

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        message = f"{key}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class ConfigErrors(LabError, ValueError):
    """Several independent problems of one config, found together before any work started (the
    preflight's report): one line each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(map(str, errors)))

    @property
    def keys(self) -> list[str]:
        return [err.key for err in self.errors]


class DataError(LabError, ValueError):
    """Input data that cannot be used: missing, empty, not UTF-8, too short, corrupt. The message
    names the file (or the data key) and the fix."""


class Interrupted(LabError):
    """A command stopped by SIGINT or SIGTERM after keeping what it had made: ``what`` says what
    (``"at step 40: checkpoint saved to ..."``), ``step`` is the training step a checkpoint resumes
    from (0: nothing to resume)."""

    def __init__(self, signum: int, what: str, step: int = 0) -> None:
        self.signum, self.step = signum, step
        super().__init__(f"{signal.Signals(signum).name} {what}")


class Refusal(BaseException):
    """A :class:`LabError` (or a folder that cannot be made, an ``OSError``) carried past a framework
    that swallows exceptions: Hydra turns anything a callback raises (a run folder in use, a sweep
    with DDP) into a mere warning, and runs on. The shell unwraps it into the error's one line."""

    def __init__(self, error: LabError | OSError) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def refused() -> Iterator[None]:
    """Raise a LabError or OSError of the block as a :class:`Refusal` (in Hydra callbacks)."""
    try:
        yield
    except (LabError, OSError) as err:
        raise Refusal(err) from None


class DivergedError(LabError):
    """Training produced NaN or infinite values (the loss, or the weights about to be saved)."""


class StorageError(LabError):
    """A file could not be written (a full disk, a read-only folder): says which one, and what is
    still intact. ``path`` is the file, for the caller to name the setting it came from."""

    def __init__(self, message: str, path: Any = None) -> None:
        super().__init__(message)
        self.path = path


_PLAIN_TYPES = {"int": int, "float": float, "bool": bool}
# Words of an annotation that do not widen it: a config value is never a Tensor, so ``float | Tensor``
# (torch.optim's ``lr``) asks a config for a number.
_NEUTRAL = {"None", "NoneType", "Optional", "Union", "typing", "torch", "Tensor"}


def type_error(arg: str, value: Any, annotation: Any) -> ArgumentError | None:
    """An ArgumentError when ``value`` cannot be what an ``int``/``float``/``bool`` annotation
    (``"int | None"``, ``Optional[float]``...) asks for, e.g. a word where a number belongs; None
    when it fits, or when the annotation admits other types (a string, a list...)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    words = set(re.findall(r"[A-Za-z_]+", text))
    names = words - _NEUTRAL
    if not names or not names <= _PLAIN_TYPES.keys():
        return None
    kinds = {_PLAIN_TYPES[name] for name in names}
    if value is None:  # null: fine where the annotation admits None, else a missing number
        fits = bool(words & {"None", "NoneType", "Optional"})
    elif isinstance(value, bool):
        fits = bool in kinds
    elif isinstance(value, int):
        fits = bool(kinds & {int, float})
    else:
        fits = isinstance(value, float) and float in kinds
    if fits:
        return None
    wanted = {int: "an integer", float: "a number", bool: "true or false"}
    # A number covers an integer: one example of the widest kind asked for.
    examples = {
        bool: "write true or false",
        float: "write a number, e.g. 0.5",
        int: "write an integer, e.g. 3",
    }
    fix = " or ".join(
        examples[k] for k in (bool, float, int) if k in kinds and not (k is int and float in kinds)
    )
    shown = "null" if value is None else repr(value)
    return ArgumentError(arg, f"{shown} is not {' or '.join(sorted(wanted[k] for k in kinds))}", fix)


F = TypeVar("F", bound=Callable[..., Any])


def checked_by(check: Callable[..., None]) -> Callable[[F], F]:
    """Give a function that a config node names as its ``_target_`` the ``check_arguments`` a class
    would have: the preflight runs it on the node's values before anything is built."""

    def mark(function: F) -> F:
        function.check_arguments = check  # type: ignore[attr-defined]
        return function

    return mark

"""The built-in instruction data: questions about the installed Python's standard library, answered
from its own docstrings and signatures — no download, and the same pairs on the same Python.

Four kinds of pair, Alpaca-style (Taori et al. 2023: ``instruction``, optional ``input``,
``output``) for each documented function, class and method of :data:`MODULES`:

- "What does `json.dumps` do?" → the first sentence of its docstring;
- "Give the signature of this function." with input `shutil.copy` → `copy(src, dst, *, follow_symlinks=True)`;
- "Is `pathlib.Path` a class, a function or a method?" → "`pathlib.Path` is a class.";
- "Which parameters does `glob.glob` take?" → "`pathname`, `root_dir`, ... and `recursive`."

The split is by module, so a test question is about a module the model was never tuned on: each
top-level package goes to train, validation or test by a hash of its name. The evaluation's
held-out modules (:func:`llm_lab.eval.heldout.is_heldout`) are never used.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import warnings
import zlib
from dataclasses import dataclass
from functools import cache

from llm_lab.eval.builtin import first_sentence
from llm_lab.eval.heldout import Documented, documented, is_heldout

# Pure-Python modules with many documented objects (C modules' functions are not Python functions,
# so ``documented`` skips them). A module the installed Python lacks is left out.
MODULES: tuple[str, ...] = (
    "abc", "ast", "asyncio", "base64", "bdb", "bisect", "bz2", "cmd", "code", "codecs",
    "collections", "colorsys", "compileall", "concurrent", "contextlib", "contextvars", "copy",
    "copyreg", "cProfile", "dataclasses", "datetime", "dbm", "dis", "doctest", "enum", "fileinput",
    "fnmatch", "functools", "getopt", "getpass", "glob", "graphlib", "gzip", "hashlib", "heapq",
    "hmac", "html", "importlib", "inspect", "io", "keyword", "linecache", "locale", "logging",
    "lzma", "modulefinder", "multiprocessing", "netrc", "numbers", "opcode", "operator", "os",
    "pathlib", "pickle", "pickletools", "pkgutil", "platform", "poplib", "posixpath", "pprint",
    "profile", "pstats", "py_compile", "pyclbr", "pydoc", "queue", "quopri", "random", "re",
    "reprlib", "rlcompleter", "runpy", "sched", "secrets", "selectors", "shelve", "shlex",
    "signal", "site", "socket", "socketserver", "sqlite3", "ssl", "stat", "string", "stringprep",
    "struct", "subprocess", "symtable", "sysconfig", "tabnanny", "tempfile", "threading", "timeit",
    "token", "tokenize", "trace", "traceback", "tracemalloc", "types", "typing", "unittest",
    "venv", "warnings", "wave", "weakref", "wsgiref", "xmlrpc", "zipapp", "zipimport", "zoneinfo",
)  # fmt: skip
SPLITS = ("train", "val", "test")
MAX_SIGNATURE = 120  # characters: longer signatures make answers longer than a small context


@dataclass(frozen=True)
class Pair:
    """One instruction/response pair and the module it is about (what the split follows)."""

    instruction: str
    input: str
    output: str
    module: str

    @property
    def split(self) -> str:
        return module_split(self.module)


def module_split(module: str) -> str:
    """train, val or test for a module, by its top-level package: about 10 % of the packages go to
    each of validation and test (a hash, so the same on every machine)."""
    bucket = zlib.crc32(module.split(".")[0].encode()) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def _kind(obj: Documented) -> str:
    """class, function or method, found by looking the object up again."""
    if "." in obj.qualname:
        return "method"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = getattr(importlib.import_module(obj.module), obj.qualname, None)
    return "class" if inspect.isclass(value) else "function"


def _parameters(signature: str) -> list[str] | None:
    """The parameter names of a signature string, ``self`` and ``cls`` left out."""
    try:  # parsed, never run: a default value is only text here
        function = ast.parse(f"def f{signature}: pass").body[0]
    except SyntaxError:
        return None
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    every = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
    return [a.arg for a in every if a is not None and a.arg not in ("self", "cls")]


def _listed(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def pairs_of(obj: Documented) -> list[Pair]:
    """The pairs one documented object gives (fewer when its docstring or signature cannot answer)."""
    name = f"{obj.module}.{obj.qualname}"
    kind = _kind(obj)
    out = [Pair(f"Is `{name}` a class, a function or a method?", "", f"`{name}` is a {kind}.", obj.module)]
    sentence = first_sentence(obj.doc)
    if sentence is not None:
        out.append(Pair(f"What does `{name}` do?", "", sentence, obj.module))
    if obj.signature and len(obj.signature) <= MAX_SIGNATURE and "<" not in obj.signature:
        short = obj.qualname.split(".")[-1]
        out.append(
            Pair(f"Give the signature of this {kind}.", f"`{name}`", f"`{short}{obj.signature}`", obj.module)
        )
        names = _parameters(obj.signature)
        if names is not None:
            answer = f"It takes {_listed(names)}." if names else "It takes no parameters."
            out.append(Pair(f"Which parameters does `{name}` take?", "", answer, obj.module))
    return out


@cache
def stdlib_pairs() -> tuple[Pair, ...]:
    """Every pair from the modules of :data:`MODULES` the installed Python has, none held out."""
    available = []
    for module in MODULES:
        if is_heldout(module):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(module)
        except ImportError:
            continue
        available.append(module)
    return tuple(pair for obj in documented(tuple(available)) for pair in pairs_of(obj))

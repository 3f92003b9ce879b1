"""The standard-library modules kept for evaluation, and the docstrings read from them.

The built-in evaluation tasks (``docs_mc``, ``docs_cloze``, ``docs_bpb``; see
:mod:`llm_lab.eval.builtin`) are made from the docstrings of the installed Python's standard
library, so evaluation needs no download. A score means something only on text the model never
trained on, so the modules they come from are one fixed list, :data:`HELDOUT_MODULES`, and every
built-in training set leaves them out: the pretraining corpus drops their documentation pages
(:func:`llm_lab.data.corpus.builtin_corpus`), and built-in fine-tuning data must skip any module for
which :func:`is_heldout` is true.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

# Modules (a package stands for all its submodules) whose text only evaluation reads. Chosen to be
# many and varied: file formats, networking, text processing, numbers, debugging (``pdb``, whose
# documentation page is one of the built-in corpus's topics, and so is excluded from it).
HELDOUT_MODULES: tuple[str, ...] = (
    "argparse",
    "calendar",
    "configparser",
    "csv",
    "difflib",
    "email",
    "filecmp",
    "fractions",
    "ftplib",
    "gettext",
    "http",
    "imaplib",
    "ipaddress",
    "json",
    "mailbox",
    "mimetypes",
    "optparse",
    "pdb",
    "plistlib",
    "shutil",
    "smtplib",
    "statistics",
    "tarfile",
    "textwrap",
    "urllib",
    "uuid",
    "xml",
    "zipfile",
)


def is_heldout(module: str) -> bool:
    """Whether a module (``email.mime.text``, or a top-level name) belongs to evaluation."""
    return module.split(".")[0] in HELDOUT_MODULES


@dataclass(frozen=True)
class Documented:
    """One documented object of a held-out module: ``json.JSONEncoder.encode``, its signature
    (``(self, o)``; empty when Python cannot tell it) and its cleaned docstring."""

    module: str
    qualname: str
    signature: str
    doc: str

    @property
    def package(self) -> str:
        return self.module.split(".")[0]


def _modules(name: str) -> Iterator[ModuleType]:
    """The module ``name`` and, for a package, every submodule that imports (sorted by name)."""
    with warnings.catch_warnings():  # deprecated submodules warn on import; they are still text
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
        yield module
        if hasattr(module, "__path__"):
            names = sorted(info.name for info in pkgutil.walk_packages(module.__path__, f"{name}."))
            for sub in names:
                if "._" in sub or ".test" in sub:  # private helpers and test suites
                    continue
                try:
                    yield importlib.import_module(sub)
                except ImportError:  # an optional dependency of the platform (e.g. no expat)
                    continue


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # some functions written in C do not say
        return ""


def documented(modules: tuple[str, ...] = HELDOUT_MODULES) -> list[Documented]:
    """Every public function, class and method defined in ``modules`` that has a docstring, in a
    fixed order (module, then name), each object once (re-exports are skipped)."""
    found: list[Documented] = []
    seen: set[int] = set()
    for top in modules:
        for module in _modules(top):
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                    continue
                members = [(name, obj)]
                if inspect.isclass(obj):
                    members += [
                        (f"{name}.{attr}", value)
                        for attr, value in sorted(vars(obj).items())
                        if not attr.startswith("_") and inspect.isfunction(value)
                    ]
                for qualname, member in members:
                    # The object's own docstring: inspect.getdoc would borrow a base class's.
                    doc = member.__doc__
                    if not isinstance(doc, str) or not doc.strip() or id(member) in seen:
                        continue
                    seen.add(id(member))
                    found.append(
                        Documented(module.__name__, qualname, _signature(member), inspect.cleandoc(doc))
                    )
    return found

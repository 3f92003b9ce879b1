"""The package's shape, checked by reading its source: no import cycle inside ``llm_lab``, and only
the application shell exits the process or reads Hydra's internals."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "llm_lab"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The ``llm_lab`` modules ``path`` imports, at its top or inside a function alike."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) - {module_name(f)} for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as the path around it), or None (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_no_false_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert "llm_lab.app.shell" in graph and graph["llm_lab.app.shell"], "the graph read no imports"
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_only_the_shell_exits_and_only_the_application_reads_hydras_internals():
    exits, internals = [], []
    for path in [*PACKAGE.rglob("*.py"), ROOT / "train.py", ROOT / "generate.py", ROOT / "evaluate.py"]:
        tree = ast.parse(path.read_text())
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "exit"
                and getattr(node.value, "id", "") == "sys"
            ):
                exits.append(where)
            if isinstance(node, ast.Raise) and "SystemExit" in ast.unparse(node):
                exits.append(where)
            if isinstance(node, ast.ImportFrom) and "hydra._internal" in (node.module or ""):
                internals.append(where)
            if isinstance(node, ast.Name) and node.id == "HydraConfig":
                internals.append(where)
    assert set(exits) <= {"llm_lab/app/shell.py"}, sorted(set(exits))
    assert set(internals) <= {f"llm_lab/app/{name}.py" for name in ("shell", "sweeps", "resolvers")}, sorted(
        set(internals)
    )

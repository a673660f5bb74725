"""No import cycle among mathtune's modules, counting imports inside functions as well as at module level.

A function-level import only postpones a cycle: the modules still depend on each other, and which one may be
imported first starts to matter. The graph is read from the source (ast), so nothing is imported to build it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mathtune

ROOT = Path(mathtune.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The mathtune modules one import statement loads (a package's __init__ and the named submodules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """module -> the mathtune modules it imports anywhere in its file."""
    files = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in _targets(node, module, path.name == "__init__.py") if t in files)
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found, key=lambda c: (-len(c), c))


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # contamination imports evaluate.benchmarks inside benchmark_questions(); the walk must count it
    assert "mathtune.evaluate.benchmarks" in graph["mathtune.data.contamination"]
    assert "mathtune.sets" in graph["mathtune.data.generators"]


def test_cycles_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_sets_is_the_bottom_layer():
    graph = import_graph()
    assert graph["mathtune.sets"] <= {"mathtune.errors", "mathtune"}


def test_no_import_cycle():
    assert cycles(import_graph()) == []

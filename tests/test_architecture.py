"""The import graph of tasks/ and flows/ runs one way: no circles, contracts below both sides.

Read from the source with `ast` (nothing is imported), counting imports inside functions too: a
lazy import that closes a circle is still a circle, only hidden from the interpreter.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file)."""
    paths = [*REPO.glob("tasks/**/*.py"), *REPO.glob("flows/**/*.py")]
    modules = {_module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                for alias in node.names:  # `from tasks import db` names a module
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def loader_modules(graph: dict[str, set[str]]) -> set[str]:
    """The loader: the package tasks.load and its modules."""
    return {m for m in graph if m == "tasks.load" or m.startswith("tasks.load.")}


def test_the_import_graph_is_read_from_every_module():
    graph = import_graph()
    assert {"tasks.load", "tasks.contracts", "tasks.clients.posthog", "flows.nightly"} <= set(graph)
    # a package's modules are nodes of their own: `from tasks.load import merge` names one
    assert {"tasks.load.batch", "tasks.load.merge", "tasks.load.source"} <= set(graph)
    assert "tasks.load.merge" in graph["tasks.load.batch"]
    assert "tasks.load.source" in graph["tasks.load"]
    # function-level imports count: replay imports tasks.steps only inside a function
    assert "tasks.steps" in graph["tasks.evaluation.replay"]
    assert "tasks.contracts" in graph["tasks.clients.posthog"]


def test_cycle_finder_finds_a_circle_through_a_lazy_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_loaders_modules_import_one_way():
    graph = import_graph()
    modules = loader_modules(graph) - {"tasks.load"}
    assert len(modules) > 1
    for module in modules:  # the package imports every one of them: importing it closes a circle
        assert "tasks.load" not in graph[module], module
    assert cycles({m: graph[m] & modules for m in modules}) == []


def test_contracts_sit_below_the_clients_and_the_loader():
    graph = import_graph()
    # contracts need nothing of the project but the SQL quoting helper
    assert graph["tasks.contracts"] <= {"tasks.db", "tasks.settings"}
    clients = [m for m in graph if m.startswith("tasks.clients.")]
    assert clients
    loader = loader_modules(graph)
    for client in clients:  # a connector hands pages over; it never reaches into the loader
        assert not graph[client] & loader, client
    assert "tasks.contracts" in set().union(*(graph[m] for m in loader))
    # db prepares connections through hooks (db.on_connect), importing none of their modules
    assert "tasks.rawstore" not in graph["tasks.db"]
    assert graph["tasks.db"] <= {"tasks.settings", "tasks.comments"}

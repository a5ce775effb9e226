"""The packages' import graph (read from the source, not by importing): no module of ``mrcnn``
or ``nucleus`` imports itself back through others, the library never imports the application,
and inference does not import training code (Mask R-CNN's or the FCN's).

Imports inside functions count as much as those at the top of a module: a cycle that only
closes at call time still means neither module can be read, tested or moved without the other.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mrcnn", "nucleus")
INFERENCE = ("nucleus.inference.detectors", "nucleus.segment", "nucleus.inference.tiling",
             "nucleus.inference.large", "nucleus.inference.model_files",
             "nucleus.formats.nuclei_table", "nucleus.inference.parallel", "nucleus.fcn.detector")
TRAINING = ("nucleus.training.train", "nucleus.fcn.train")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source."""
    known = modules()

    def owner(dotted: str) -> str | None:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            name = ".".join(parts[:end])
            if name in known:
                return name
        return None

    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                dotted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                dotted = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for item in dotted:
                target = owner(item)
                # a package's own __init__ is not an edge for its submodules
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per module that can reach itself, found by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_library_never_imports_the_application():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("mrcnn"):
            assert not [t for t in targets if t.startswith("nucleus")], name


def test_inference_does_not_import_training_code():
    graph = import_graph()
    assert set(INFERENCE) <= set(graph) and set(TRAINING) <= set(graph)
    for name in INFERENCE:
        assert not set(TRAINING) & reachable(graph, name), name

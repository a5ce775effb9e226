"""The packages' import graph (read from the source, not by importing): no module of ``mrcnn``
or ``nucleus`` imports itself back through others, the library never imports the application,
inference does not import training code (Mask R-CNN's or the FCN's), and the sub-packages of
``nucleus`` are layered: formats below inference and scoring, training and the command line on
top (:data:`LAYERS`). The README's Architecture table says the same, and is checked against it.

Imports inside functions count as much as those at the top of a module: a cycle that only
closes at call time still means neither module can be read, tested or moved without the other.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mrcnn", "nucleus")
INFERENCE = ("nucleus.inference.detectors", "nucleus.segment", "nucleus.inference.tiling",
             "nucleus.inference.large", "nucleus.inference.nucleus_model",
             "nucleus.formats.nuclei_table", "nucleus.inference.parallel", "nucleus.fcn.detector")
TRAINING = ("nucleus.training.train", "nucleus.fcn.train")
# Package -> the packages and modules none of its modules may reach, through any chain of
# imports. The top-level modules of ``nucleus`` (config, dataset, segment, ...) and nucleus.fcn
# belong to no layer: they are checked through what the layers reach.
LAYERS = {
    "mrcnn": ("nucleus",),
    "nucleus.formats": ("nucleus.inference", "nucleus.training", "nucleus.scoring", "nucleus.cli"),
    "nucleus.inference": ("nucleus.training", "nucleus.cli"),
    "nucleus.scoring": ("nucleus.training", "nucleus.cli"),
    "nucleus.training": ("nucleus.cli",),
}
SUBPACKAGES = ("nucleus.formats", "nucleus.inference", "nucleus.training", "nucleus.scoring")


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


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def crossings(graph: dict[str, set[str]], layers: dict[str, tuple[str, ...]],
              known: set[tuple[str, str]] = frozenset()) -> set[tuple[str, str]]:
    """(module, module it must not reach) for each module of a layer that reaches, through any
    chain of imports, one of its layer's forbidden packages; the edges in ``known`` are left out
    of the graph first, so what they bring in does not count."""
    graph = {name: {t for t in targets if (name, t) not in known}
             for name, targets in graph.items()}
    found = set()
    for layer, forbidden in layers.items():
        for name in (n for n in graph if inside(n, layer)):
            found |= {(name, t) for t in reachable(graph, name)
                      if any(inside(t, f) for f in forbidden)}
    return found


def test_the_packages_are_layered():
    graph = import_graph()
    assert all(any(inside(name, layer) for name in graph) for layer in LAYERS)
    assert crossings(graph, LAYERS) == set()


def test_the_crossing_finder_follows_chains():
    graph = {"low.a": {"mid.b"}, "mid.b": {"high.c"}, "high.c": set(), "low.d": set()}
    layers = {"low": ("high",)}
    assert crossings(graph, layers) == {("low.a", "high.c")}
    assert crossings(graph, layers, {("mid.b", "high.c")}) == set()
    assert crossings(graph, {"high": ("low",)}) == set()


def test_the_sub_packages_import_nothing_themselves():
    """Their ``__init__`` is a docstring: importing ``nucleus.inference`` loads no detector."""
    graph = import_graph()
    for package in SUBPACKAGES:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), package
        assert graph[package] == set(), package


def test_inference_does_not_import_training_code():
    graph = import_graph()
    assert set(INFERENCE) <= set(graph) and set(TRAINING) <= set(graph)
    for name in INFERENCE:
        assert not set(TRAINING) & reachable(graph, name), name


# ----------------------------------------------------------------------------- README
def readme_architecture() -> list[tuple[list[str], set[str]]]:
    """The rows of the README's Architecture table: (the packages or modules of the first
    column, the names of the last column, bracketed notes left out)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Architecture\n") + 1:]
    section = section[:section.index("\n## ")]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.append((re.findall(r"`([^`]+)`", cells[0]),
                         set(re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[-1])))))
    return rows


def short_name(module: str) -> str:
    """How the table names a module of ``nucleus``: its sub-package, else its own name."""
    parts = module.split(".")
    if len(parts) > 1 and (ROOT / parts[0] / parts[1] / "__init__.py").is_file():
        return parts[1]
    return parts[-1]


def test_the_readme_architecture_table_lists_the_imports_there_are():
    """Every module is in a row of the table (the longest name that holds it), and each row
    lists exactly the packages and modules of ``nucleus`` its modules import from outside it."""
    graph = import_graph()
    rows = readme_architecture()
    names = [name for row_names, _ in rows for name in row_names]
    assert len(rows) > 10 and len(names) == len(set(names))
    owner = {}
    for module in graph:
        holders = [n for n in names if module == n or module.startswith(n + ".")]
        assert holders, f"{module}: in no row of the README's Architecture table"
        owner[module] = max(holders, key=len)
    for row_names, listed in rows:
        members = [m for m, name in owner.items() if name in row_names]
        assert len(members) >= len(row_names), row_names     # each name is a real module
        found = {short_name(t) for m in members for t in graph[m]
                 if t.split(".")[0] == "nucleus" and owner[t] not in row_names}
        assert found == listed, (row_names, sorted(found), sorted(listed))


def test_the_table_reader_follows_the_markdown():
    assert short_name("nucleus.inference.tiling") == "inference"
    assert short_name("nucleus.dataset") == "dataset" and short_name("nucleus") == "nucleus"
    rows = readme_architecture()
    assert rows[0] == (["mrcnn"], set())
    assert (["nucleus.formats"], {"errors", "dataset"}) in rows

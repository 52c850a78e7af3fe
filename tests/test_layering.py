"""The layering contract of docs/ARCHITECTURE.md, read from every import in the tree (module level and
inside functions alike), so the written rules and the code cannot drift apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "datamodules", "tasks", "callbacks", "hydra_plugins")
# Rooms other tasks may build on (docs/ARCHITECTURE.md, "Base rooms").
BASE_ROOMS = {"tasks.classification"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The project module an imported name lives in (``a.b.c`` -> ``a.b`` when ``c`` is not a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every project module ``module`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_owner(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                target = _owner(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _owner(base)
                if target:
                    found.add(target)
    found.discard(module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def room(module: str) -> str:
    """``tasks.<system>`` for a task's modules, else the top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 1 else parts[0]


def forbidden(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` under the written rules, or None."""
    source, target = room(importer), room(imported)
    if source == "core" and target != "core":
        return "core imports no task, DataModule or callback"
    if source == "datamodules" and target not in ("core", "datamodules"):
        return "datamodules import core only"
    if source.startswith("tasks.") and target.startswith("tasks.") and target not in (source, *BASE_ROOMS):
        return "a task never imports another task's room (shared pieces move to core)"
    if source.startswith("tasks.") and target in ("callbacks", "hydra_plugins"):
        return "tasks do not import callbacks or plugins"
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_reader_sees_imports_inside_functions_and_relative_imports():
    # a checker that missed these would pass a tree full of hidden arrows
    assert "core.resolvers" in GRAPH["core.training"]
    assert any(module.startswith("datamodules.") for module in GRAPH["tasks.talnet.module"])
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert forbidden("datamodules.thumos14", "tasks.talnet.anchors")
    assert forbidden("tasks.photobooth.run", "tasks.facemesh.detector")
    assert not forbidden("tasks.fgvc.module", "tasks.classification.module")


def test_every_import_follows_the_layering_rules():
    broken = [
        f"{importer} -> {imported}: {why}"
        for importer, imported_modules in sorted(GRAPH.items())
        for imported in sorted(imported_modules)
        if (why := forbidden(importer, imported))
    ]
    assert not broken, "imports the contract forbids:\n" + "\n".join(broken)


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles (move the shared piece out):\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("entry_point", ["train.py", "eval.py", "predict.py", "atlas.py"])
def test_entry_points_are_thin(entry_point):
    """Entry points compose the config and call core (or the one room they front); no system logic."""
    tree = ast.parse((ROOT / entry_point).read_text())
    imported = {_owner(node.module) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} - {
        None
    }
    assert all(room(module) in ("core", "tasks.atlas") for module in imported), imported

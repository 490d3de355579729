"""The package has no import cycle: the graph of seglight's imports of its own modules, written
anywhere in a file (at the top or inside a function), plus the CLI's table of subcommands (its
lazy imports by name), is acyclic. A package's __init__ re-exporting its submodules is not an
edge back from them: only imports written in the code count."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import seglight

PACKAGE = Path(seglight.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the seglight modules it imports}, from the source, without importing it."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, *([base] if base else [])])
                # `from seglight.data import base` imports the submodule seglight.data.base
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            for target in targets:
                while target and target not in files:  # `import seglight.x.y` of a name in x
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def subcommand_edges() -> dict[str, set[str]]:
    """The table imports each extra subcommand's module lazily, by name: an edge all the same."""
    from seglight.cli import SUBCOMMANDS

    modules = {s.target.partition(":")[0] for s in SUBCOMMANDS.values() if s.target}
    return {"seglight.cli": modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle():
    graph = import_graph()
    for module, targets in subcommand_edges().items():
        graph.setdefault(module, set()).update(targets)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one(tmp_path):
    """The check itself: a cycle through a function-level import is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


@pytest.mark.parametrize("name", ["audit", "export", "seeds"])
def test_old_module_paths_warn_and_are_the_new_modules(name, monkeypatch):
    new = importlib.import_module(f"seglight.cli.{name}")
    monkeypatch.delitem(sys.modules, f"seglight.{name}", raising=False)
    with pytest.warns(DeprecationWarning, match=f"seglight.cli.{name}"):
        old = importlib.import_module(f"seglight.{name}")
    assert old is new

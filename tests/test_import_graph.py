"""The layering of DESIGN.md, checked on the source: imports point downwards only.

Every import statement of every module under ``warpphys/`` and ``systems/`` (also those inside
functions) is read with ``ast``; the graph of package-internal imports must have no cycle,
``systems`` must import nothing from ``warpphys``, and only the command line parses arguments.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("warpphys", "systems")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package-internal modules that ``name`` imports (``from pkg import sub`` counts as the
    submodule ``pkg.sub`` when it is one; a parent package's own ``__init__`` is not counted,
    since importing any submodule runs it)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(n, p, set(mods)) for n, p in mods.items()}


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n):
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = path[path.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        path.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_systems_import_nothing_from_warpphys():
    for name, deps in _graph().items():
        if name.split(".")[0] == "systems":
            assert not [d for d in deps if d.split(".")[0] == "warpphys"], name


def test_only_the_command_line_parses_arguments():
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        uses = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for a in node.names}
        uses |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
        if "argparse" in uses:
            assert name == "warpphys.cli", f"{name} imports argparse"


def test_the_graph_sees_the_known_layers():
    # a guard on the parser itself: it must find edges that certainly exist
    graph = _graph()
    assert "warpphys.registry" in graph["warpphys.baselines"]
    assert "warpphys.roots" in graph["warpphys.physics"]
    assert "systems" in graph["warpphys.data"]

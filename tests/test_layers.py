"""The package's imports point down the layers, and no module circle exists.

Read from the source with `ast` (nothing is imported), counting every import: at the top,
inside functions (lazy ones) and under ``TYPE_CHECKING``, since each is a dependency a
reader has to hold in mind all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module may import its own layer and those below it.
LAYERS = [
    {"errors", "metrics"},
    {"policy", "watermark"},
    {"config", "config_reference", "store", "engine"},
    {"tracing", "suspect"},
    {"exchange"},
    {"gateway"},
    {"demo"},
    {"cli", "__main__"},
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# The traffic simulator's archetype catalogue is a table; it may stay long.
LONG_FILES_ALLOWED = {"distillguard/tracing/simulate/archetypes.py"}
MAX_LINES = 500


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, package: str) -> nx.DiGraph:
    """Module → module it imports, within `package`. `from a import b` names the module
    `a.b` when there is one; a module's own enclosing packages are not edges (importing
    anything inside them runs them first anyway)."""
    paths = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target in _imports(ast.parse(path.read_text()), here, paths):
            if target != name and not name.startswith(target + "."):
                graph.add_edge(name, target)
    return graph


def _imports(tree: ast.AST, here: str, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return {name for name in found if name in modules}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def upward_imports(graph: nx.DiGraph) -> list[str]:
    wrong = []
    for source, target in graph.edges:
        low, high = layer(source), layer(target)
        if low is not None and high is not None and high > low:
            wrong.append(f"{source} imports {target}")
    return sorted(wrong)


def circles(graph: nx.DiGraph) -> list[list[str]]:
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def test_every_import_points_down_the_layers():
    graph = import_graph(SRC, "distillguard")
    unplaced = {n.split(".")[1] for n in graph if "." in n and layer(n) is None}
    assert not unplaced, f"give these top-level modules a layer in LAYERS: {unplaced}"
    assert upward_imports(graph) == []


def test_no_module_circle():
    assert circles(import_graph(SRC, "distillguard")) == []


def test_no_circle_between_top_level_parts():
    graph = import_graph(SRC, "distillguard")
    parts = nx.DiGraph()
    for source, target in graph.edges:
        a, b = source.split(".")[1:2], target.split(".")[1:2]
        if a and b and a != b:
            parts.add_edge(a[0], b[0])
    assert circles(parts) == []


def test_no_module_has_grown_past_what_one_reader_holds():
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / "distillguard").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long.keys() <= LONG_FILES_ALLOWED, long


@pytest.fixture
def broken_package(tmp_path: Path) -> Path:
    """A package with one upward import (store → gateway), one lazy circle and one
    `from . import` that must not count as importing the package itself."""
    files = {
        "pkg/__init__.py": "from pkg.watermark import core\n",
        "pkg/store/__init__.py": "",
        "pkg/store/accounts.py": "from pkg.gateway.policy import Limits\n",
        "pkg/gateway/__init__.py": "",
        "pkg/gateway/policy.py": "Limits = int\n",
        "pkg/watermark/__init__.py": "from pkg.watermark.core import Watermark\n",
        "pkg/watermark/core.py": (
            "from pkg.watermark import hashing\n"
            "def processor():\n    from .torch_processor import P\n    return P\n"
        ),
        "pkg/watermark/hashing.py": "",
        "pkg/watermark/torch_processor.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.watermark.core import Watermark\nP = 1\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_find_an_upward_import_and_a_circle(broken_package):
    graph = import_graph(broken_package, "pkg")
    assert upward_imports(graph) == ["pkg.store.accounts imports pkg.gateway.policy"]
    assert circles(graph) == [["pkg.watermark.core", "pkg.watermark.torch_processor"]]
    assert graph.has_edge("pkg.watermark.core", "pkg.watermark.hashing")
    assert not graph.has_edge("pkg.watermark.core", "pkg.watermark")

"""The package's shape: no import cycles, no layer importing one above it, no module or function past the size limits.

Imports inside functions count too: a late import hides a cycle from Python, not from a reader.
Layers, lowest first (a package may import its own layer and those below):
base modules -> models -> data -> importance -> train -> evaluate -> align -> report -> pipeline -> cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import omnishift

ROOT = Path(omnishift.__file__).parent
LAYERS = [{"paths", "allocator", "schema", "runs", "plotting", "fingerprint", "reuse", "claims", "tables", "__init__"},
          {"models"}, {"data"}, {"importance"}, {"train"}, {"evaluate"}, {"align"}, {"report"}, {"pipeline"}, {"cli", "__main__"}]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: package modules it imports anywhere in its file}``, e.g. ``omnishift.train.config``."""
    mods = {}
    for f in root.rglob("*.py"):
        parts = ("omnishift",) + f.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in mods.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {t for t in found if t in mods and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (c := visit(w)):
                return c
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_layer_imports_a_higher_one():
    bad = sorted(f"{m} -> {t}" for m, ts in import_graph().items() for t in ts if _layer(t) > _layer(m))
    assert not bad, bad


def test_the_walker_finds_a_planted_cycle_and_a_late_import(tmp_path):
    pkg = tmp_path / "omnishift"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("from omnishift.train import b\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from . import a  # a late, relative import\n")
    graph = import_graph(pkg)
    assert graph["omnishift.train.b"] == {"omnishift.train", "omnishift.train.a"}
    assert find_cycle(graph) == ["omnishift.train.a", "omnishift.train.b", "omnishift.train.a"]


def test_modules_and_functions_stay_readable():
    """No module over 500 lines, no function over 80: the style's limits, held by a test."""
    long_modules, long_functions = [], []
    for f in sorted(ROOT.rglob("*.py")):
        text = f.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            long_modules.append(str(f.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_modules, long_modules
    assert not long_functions, long_functions

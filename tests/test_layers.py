"""The import rule, checked on the source: no upward import between layers, no import cycle.

Layers, bottom up: ``storage`` (where results live) <- ``engine`` (where work runs) <- ``tasks``
(what is computed); ``viz`` (how results are seen) sits on ``storage`` only; ``jobs`` and ``cli``
on top. ``interpretome.errors`` and ``interpretome.version`` are neutral: every layer may import
them; the package root (``interpretome/__init__.py``, the public API, which imports every layer)
and the top-level helpers (``datasets``, ``pbmc``) are for jobs, cli and users only. Every import
counts — module level or inside a function — because a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import interpretome

ROOT = Path(interpretome.__file__).parent
PKG = "interpretome"

TOP = {f"{PKG}.jobs", f"{PKG}.cli", f"{PKG}.datasets", f"{PKG}.pbmc", f"{PKG}.__main__", PKG}
FORBIDDEN = {
    "storage": {f"{PKG}.engine", f"{PKG}.tasks", f"{PKG}.viz"} | TOP,
    "engine": {f"{PKG}.tasks", f"{PKG}.viz"} | TOP,
    "tasks": {f"{PKG}.viz"} | TOP,
    "viz": {f"{PKG}.engine", f"{PKG}.tasks"} | TOP,
}
"""Per layer, the modules (and packages: their submodules too) it may not import."""

NEUTRAL = {f"{PKG}.errors", f"{PKG}.version"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(name: str) -> list[tuple[str, int]]:
    """Return ``(imported interpretome module, line)`` for every import in module ``name``."""
    path = MODULES[name]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == PKG]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, path, node)
            if base.split(".")[0] != PKG:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, node.lineno))
    return out


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FORBIDDEN else None


def _within(target: str, prefix: str) -> bool:
    return target == prefix or (prefix != PKG and target.startswith(prefix + "."))


def test_layers__no_upward_import():
    bad = []
    for name in MODULES:
        layer = _layer(name)
        if layer is None:
            continue
        for target, line in imports_of(name):
            if target in NEUTRAL:
                continue
            for forbidden in FORBIDDEN[layer]:
                if _within(target, forbidden):
                    bad.append(f"{MODULES[name].relative_to(ROOT.parent)}:{line}: {layer} imports {target}")
    assert not bad, "upward imports (see docs/DESIGN.md, 'Layers and imports'):\n" + "\n".join(bad)


def test_layers__errors_and_version_import_nothing_of_the_package():
    for name in NEUTRAL:
        assert imports_of(name) == [], name


def import_graph() -> dict[str, set[str]]:
    """Return ``{module: modules it imports}`` over the package (all imports, lazy ones included)."""
    return {name: {t for t, _ in imports_of(name) if t in MODULES and t != name} for name in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_layers__find_cycles_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_layers__the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / PKG / "storage" / "leak.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..tasks.perturb import perturbation_sweep\n    return perturbation_sweep\n")
    monkeypatch.setitem(MODULES, f"{PKG}.storage.leak", fake)
    targets = [t for t, _ in imports_of(f"{PKG}.storage.leak")]
    assert targets == [f"{PKG}.tasks.perturb"]
    assert _layer(f"{PKG}.storage.leak") == "storage"
    assert any(_within(targets[0], f) for f in FORBIDDEN["storage"])


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers__no_import_cycle_within_a_layer(layer):
    graph = import_graph()
    cycles = [c for c in find_cycles(graph) if any(_layer(m) == layer for m in c)]
    assert not cycles, f"import cycles involving {layer}: {cycles}"


def test_layers__no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles (every import counts, lazy ones too): {cycles}"

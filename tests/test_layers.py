"""The one-way flow: a lower layer never imports a higher one, and merge and serving need no training code."""
from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]

# docs/DESIGN.md: corpus -> recognizers -> hypotheses -> model + registry -> training | merge + serving
# (the benchmarks sit beside the package, in benchmarks/: they import it, it never imports them)
LAYERS = {
    "rerank.corpus": 0, "rerank.metrics": 0, "rerank.io": 0, "rerank.config": 0, "rerank.ranking": 0, "rerank.plots": 0,
    "rerank.recognizers": 1,
    "rerank.hypotheses": 2,
    "rerank.model": 3,
    "rerank.losses": 4, "rerank.training": 5,
    "rerank.merge": 5, "rerank.serving": 5,
}
# merge and serving sit above the model layer but beside training: they never import it
SIBLINGS = {("rerank.merge", "rerank.training"), ("rerank.merge", "rerank.losses"),
            ("rerank.serving", "rerank.training"), ("rerank.serving", "rerank.losses")}


def package_of(module: str) -> str | None:
    for p in sorted(LAYERS, key=len, reverse=True):
        if module == p or module.startswith(p + "."):
            return p
    return None


def imports_of(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((REPO / "rerank").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out.append((name, path))
    return out


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m, _ in modules() if m != "rerank" and package_of(m) is None]
    assert unplaced == [], f"add these to LAYERS and to docs/DESIGN.md: {unplaced}"


def test_no_module_imports_a_higher_layer():
    problems = []
    for name, path in modules():
        own = package_of(name)
        if own is None:
            continue
        for imported, line in imports_of(path):
            other = package_of(imported)
            if other is None or other == own:
                continue
            if LAYERS[other] > LAYERS[own] or (own, other) in SIBLINGS:
                problems.append(f"{path.relative_to(REPO)}:{line}: {own} (layer {LAYERS[own]}) imports {imported} "
                                f"(layer {LAYERS[other]})")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("module", ["rerank.serving.app", "rerank.merge.run", "rerank.merge.promote", "rerank.merge.release",
                                    "rerank.model.registry"])
def test_merge_and_serving_load_no_training_code(module):
    """The published model's format is importable without Lightning, torch, losses or Hydra apps."""
    code = (f"import sys; import {module}; "
            "print(sorted(m for m in ('lightning', 'torch', 'rerank.training', 'rerank.losses', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def package_graph() -> dict[str, list[str]]:
    """Which packages each package imports (the other packages of rerank only)."""
    edges: dict[str, set[str]] = {p: set() for p in LAYERS}
    for name, path in modules():
        own = package_of(name)
        for imported, _ in imports_of(path):
            other = package_of(imported)
            if own is not None and other is not None and other != own:
                edges[own].add(other)
    return {p: sorted(edges[p], key=lambda q: (LAYERS[q], q)) for p in sorted(LAYERS, key=lambda q: (LAYERS[q], q))}


def render_graph() -> str:
    return "\n".join(f"    {p} (layer {LAYERS[p]}) -> {', '.join(d) if d else '-'}" for p, d in package_graph().items())


def test_design_md_shows_the_package_graph_as_it_is():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    want = render_graph()
    assert want in text, "docs/DESIGN.md's package graph is out of date; it is now:\n" + want


# ------------------------------------------------------------------ the benchmarks sit beside the package

def test_the_library_never_imports_the_benchmarks():
    """benchmarks/ is not installed: no module of rerank/ (nor hydra_plugins/ or scripts/) imports it or names it."""
    problems = []
    for root in ("rerank", "hydra_plugins", "scripts"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for imported, line in imports_of(path):
                if imported == "benchmarks" or imported.startswith("benchmarks."):
                    problems.append(f"{path.relative_to(REPO)}:{line}: imports {imported}")
            for node in ast.walk(tree):  # a module named in a string: import_module("benchmarks.x"), a _target_
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("benchmarks."):
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno}: names {node.value!r}")
    assert problems == [], "\n".join(problems)
    assert not (REPO / "rerank" / "benchmark").exists()


def test_the_install_does_not_ship_the_benchmarks():
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = [p for p in ("benchmarks", "benchmarks.suite") if any(fnmatch.fnmatchcase(p, pattern) for pattern in include)]
    assert shipped == [], f"pyproject.toml's packages.find {include} ships {shipped}"
    assert any(fnmatch.fnmatchcase("rerank.merge", pattern) for pattern in include)

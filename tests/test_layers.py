"""The packages import one way: core <- training, suites <- orchestration <- dashboards.

Every ``import`` statement counts, function-local ones included (a lazy import is still a
dependency). A folder's layer is its package: ``harness/core``, ``harness/backends`` and
``harness/world`` are the base, ``training`` and ``suites`` build on them, the modules directly
in ``harness/`` orchestrate, and ``dashboards`` reads what the orchestration produced.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "training", "suites", "dashboards")
BASE = ("harness/core", "harness/backends", "harness/world")

# layer -> the layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "harness/world": set(),
    "harness/core": set(),
    "harness/backends": {"harness/core"},
    "training": {"harness/core", "harness/backends"},
    "suites": {"harness/core", "harness/backends", "harness/world"},
    "harness": {"harness/core", "harness/backends", "harness/world", "training", "suites"},
    "dashboards": {"harness", "harness/core", "harness/backends", "harness/world"},
}


def layer_of_module(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "harness" and len(parts) > 1 and f"harness/{parts[1]}" in BASE:
        return f"harness/{parts[1]}"
    return parts[0]


def layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return layer_of_module(".".join(rel.parts)) or ""


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from harness import core` imports harness.core, not the orchestration
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def layer_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(layer -> imported layers, violations as 'file:line: A imports B (module)')."""
    graph: dict[str, set[str]] = defaultdict(set)
    violations: list[str] = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            src = layer_of_file(path)
            for line, module in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
                dst = layer_of_module(module)
                if dst is None or dst == src:
                    continue
                graph[src].add(dst)
                if dst not in ALLOWED[src]:
                    violations.append(f"{path.relative_to(ROOT)}:{line}: {src} imports {dst} ({module})")
    return graph, violations


def test_allowed_layers_form_a_dag() -> None:
    seen: dict[str, int] = {}

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"cycle in ALLOWED: {' -> '.join((*stack, node))}"
        if seen.get(node):
            return
        for dep in ALLOWED[node]:
            visit(dep, (*stack, node))
        seen[node] = 1

    for layer in ALLOWED:
        visit(layer, ())


def test_no_import_against_the_layers() -> None:
    graph, violations = layer_graph()
    assert not violations, "imports against the layers:\n" + "\n".join(violations)
    assert graph["harness"] >= {"harness/core", "training", "suites"}  # the test sees real edges


def test_the_checker_catches_a_back_edge(tmp_path) -> None:
    bad = "from harness.pipeline import Pipeline\nimport training.runtime\n"
    found = [layer_of_module(m) for _, m in imported_modules(ast.parse(bad))]
    assert found == ["harness", "training"]
    assert "harness" not in ALLOWED["harness/core"] and "training" not in ALLOWED["suites"]

"""Imports point down only: lower layers of the package never import higher ones (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "innerssl"
FORBIDDEN = {
    "ssl": (
        "innerssl.data",
        "innerssl.containers",
        "innerssl.eval",
        "innerssl.training",
        "innerssl.cloud",
        "innerssl.restoration",
    ),
    "networks": (
        "innerssl.ssl",
        "innerssl.data",
        "innerssl.containers",
        "innerssl.eval",
        "innerssl.training",
        "innerssl.restoration",
    ),
    "augment": ("innerssl.ssl", "innerssl.containers", "innerssl.eval", "innerssl.training", "innerssl.restoration"),
    "data": ("innerssl.ssl", "innerssl.containers", "innerssl.eval", "innerssl.training", "innerssl.restoration"),
    "outputs": ("innerssl.containers", "innerssl.training", "innerssl.restoration"),
    "eval": (
        "innerssl.containers",
        "innerssl.training",
        "innerssl.compare",
        "innerssl.knn_evaluation",
        "innerssl.restoration",
    ),
    "restoration": (
        "innerssl.containers",
        "innerssl.training",
        "innerssl.compare",
        "innerssl.compare_segmentation",
        "innerssl.cloud",
    ),
    "containers": ("innerssl.training", "innerssl.compare", "innerssl.compare_segmentation", "innerssl.knn_evaluation"),
}
"""Per subpackage, the modules it must not import (at module level or inside functions)."""


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    violations = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in imported_modules(path)
        if any(name == banned or name.startswith(f"{banned}.") for banned in FORBIDDEN[layer])
    ]
    assert not violations, "\n".join(violations)


def test_the_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from innerssl.data.cache import CacheSettings\n    import innerssl.eval.knn\n")
    assert imported_modules(module) == ["innerssl.data.cache", "innerssl.eval.knn"]

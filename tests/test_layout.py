"""The package's layout rules: no module over 400 lines, dependencies pointing one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("errors", "engines", "providers", "containers")
MODULES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
MAX_LINES = 400
# who may not import whom: engines and providers never import each other or containers
FORBIDDEN = {"engines": ("providers", "containers"), "providers": ("engines", "containers")}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_no_module_is_over_400_lines(path: Path) -> None:
    """A module over 400 lines is split by idea before it grows further."""
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_dependencies_point_one_way(path: Path) -> None:
    """containers -> providers and engines; engines and providers import neither each
    other nor containers."""
    package = path.relative_to(ROOT).parts[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    forbidden = [f"enginescope.{name}" for name in FORBIDDEN.get(package, ())]
    assert [] == sorted(
        name for name in imported for bad in forbidden if name == bad or name.startswith(bad + ".")
    )

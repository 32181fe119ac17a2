"""The packages form layers, each importing only those below it: heartseg (the core), then db (the record), then
workers, then scheduler (the CLI and the scheduler). Read from the source with ``ast``, without importing: an import
inside a function counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What each package must not import: the packages above it.
FORBIDDEN = {
    "heartseg": ("db", "workers", "scheduler"),
    "db": ("workers", "scheduler"),
    "workers": ("scheduler",),
}

#: Functions that import the module named by their first argument.
IMPORT_FUNCTIONS = {"import_module", "__import__"}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every absolute module an AST imports, with its line: ``import x``, ``from x import y`` and
    ``importlib.import_module("x")`` anywhere in the module, functions included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if function in IMPORT_FUNCTIONS:
                yield node.lineno, node.args[0].value


def layer_violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line imports module`` for each import of a forbidden package in ``package``'s source files."""
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_modules(tree):
            if module.split(".")[0] in forbidden:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return violations


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
    violations = layer_violations(package, FORBIDDEN[package])
    assert not violations, f"{package} must not import {', '.join(FORBIDDEN[package])}:\n" + "\n".join(violations)


def test_the_check_sees_imports_inside_functions_and_by_name() -> None:
    source = "def f():\n    from scheduler.cli import app\n    import importlib\n    importlib.import_module('db.x')\n"
    assert list(imported_modules(ast.parse(source))) == [(2, "scheduler.cli"), (3, "importlib"), (4, "db.x")]

"""The test suite's own rules (tests/README.md), checked on the parsed imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
PRODUCT = ("hpo", "hpo_trainer", "helpers")
KINDS = ("unit", "integration", "e2e", "images")  # images: `make image-test` only


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports (top level, in functions, under TYPE_CHECKING)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def _local(module: str) -> bool:
    """Whether ``module`` is one of the suite's own (relative, or a top-level name of tests/)."""
    first = module.split(".")[0]
    return (
        not first
        or first in {*KINDS, "support", "helpers", "conftest"}
        or first.startswith("test_")
    )


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _sources(TESTS / "support"), ids=lambda p: p.name)
def test_the_infrastructure_knows_nothing_of_the_product(path: Path) -> None:
    product = {m for m in _imported(path) if m.split(".")[0] in PRODUCT}
    assert product == set(), f"{path.relative_to(TESTS)} imports {sorted(product)}"


def test_test_modules_never_import_each_other_or_a_conftest() -> None:
    found = {
        f"{path.relative_to(TESTS)}: {name}"
        for path in _sources(TESTS)
        for name in _imported(path)
        if _local(name) and name.split(".")[-1].startswith(("test_", "conftest"))
    }
    assert found == set()


def test_every_test_module_is_in_unit_integration_or_e2e() -> None:
    stray = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.relative_to(TESTS).parts[0] not in KINDS
    ]
    assert stray == []

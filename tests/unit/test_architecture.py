"""Imports point one way (docs/architecture.md): every product package's import statements,
including those inside functions, are read with ``ast`` and checked against the table."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sensors", "firmware_sim", "detection", "ingest", "alerts", "dashboards", "boltwatch")
ALLOWED: dict[str, set[str]] = {
    "sensors": set(),
    "firmware_sim": {"sensors"},
    "detection": {"sensors"},
    "ingest": {"sensors"},
    "alerts": {"sensors", "detection.events"},
    "dashboards": {"sensors", "detection", "ingest", "alerts"},
    "boltwatch": set(PACKAGES),
}
"""Per package, what it may import: a package name, or a module (then only that module)."""
KNOWN_DEBT: set[tuple[str, str]] = set()
"""Imports against the table that docs/architecture.md names, to be removed (issue 12)."""
TOOLS = ("tests", "bench", "fuzz")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _allowed(package: str, module: str) -> bool:
    top = module.split(".", maxsplit=1)[0]
    if top == package or top not in (*PACKAGES, *TOOLS):
        return True
    return any(module == a or module.startswith(a + ".") for a in ALLOWED[package])


def _violations() -> set[tuple[str, str]]:
    bad: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imports(path):
                if not _allowed(package, module):
                    bad.add((path.relative_to(ROOT).as_posix(), module))
    return bad


def test_imports_point_the_way_docs_architecture_says() -> None:
    bad = _violations() - KNOWN_DEBT
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(
        f"  {path}: import {module}" for path, module in sorted(bad)
    )


def test_the_known_exceptions_are_still_real() -> None:
    """An exception that was removed must leave the list (and the page) too."""
    assert _violations() >= KNOWN_DEBT


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    wrong = tmp_path / "x.py"
    wrong.write_text("def f():\n    from firmware_sim.field import simulate_field\n")
    modules = _imports(wrong)
    assert modules == ["firmware_sim.field"]
    assert not _allowed("detection", modules[0])
    assert _allowed("boltwatch", modules[0])
    assert not _allowed("alerts", "detection.engine")
    assert _allowed("alerts", "detection.events")
    assert not _allowed("alerts", "detection.base")


def test_the_page_and_the_table_agree() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for package in PACKAGES:
        assert f"`{package}/`" in page
    for path, module in KNOWN_DEBT:
        assert path in page
        assert module in page

"""`exporter/sysdig/` is the only importer of sdcclient: a change in sdcclient is a change there."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.rigs.paths import ROOT

EXPORTER = ROOT / "exporter"
PACKAGE = EXPORTER / "sysdig"


def sdcclient_imports(path: Path) -> list[int]:
    """The lines of `path` that import sdcclient or one of its modules, at any depth."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "sdcclient" or name.startswith("sdcclient.") for name in names):
            lines.append(node.lineno)
    return lines


def test_no_module_outside_the_sysdig_package_imports_sdcclient() -> None:
    outside = {
        str(path.relative_to(EXPORTER.parent)): found
        for path in sorted(EXPORTER.rglob("*.py"))
        if PACKAGE not in path.parents and (found := sdcclient_imports(path))
    }
    assert outside == {}, f"only exporter/sysdig/ may import sdcclient: {outside}"


def test_the_sysdig_client_is_the_one_importer() -> None:
    inside = {path.name for path in PACKAGE.rglob("*.py") if sdcclient_imports(path)}
    assert inside == {"client.py"}

"""Client libraries stay inside their adapter packages: confluent_kafka in `exporter/kafka/` (and
the Schema Registry framing, `exporter/avro/registry.py`), fastavro in `exporter/avro/`. A change
of either library is then a change in one folder. Every import counts, lazy and typing-only ones
included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXPORTER = Path(__file__).resolve().parents[2] / "exporter"

ALLOWED: dict[str, tuple[str, ...]] = {
    "confluent_kafka": ("kafka/", "avro/registry.py"),
    "fastavro": ("avro/",),
}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of the absolute modules `path` imports anywhere in its body."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def importers(library: str) -> set[str]:
    return {p.relative_to(EXPORTER).as_posix() for p in EXPORTER.rglob("*.py")
            if library in imported_roots(p)}


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_library_is_imported_only_inside_its_adapter(library: str) -> None:
    found = importers(library)
    assert found, f"no module imports {library}: the walk is broken"
    outside = sorted(m for m in found if not m.startswith(ALLOWED[library]))
    assert not outside, f"{library} imported outside {', '.join(ALLOWED[library])}: {outside}"

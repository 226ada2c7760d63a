"""Schema evolution: every schema in `schemas/` is BACKWARD_TRANSITIVE-compatible with every
released version of the same record in `schemas/released/`, and keeps the rules that
Avro's checker does not see (decimal precision/scale, namespaces, docs)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from tests.fakes.schema_registry import compatibility_problems, level_problems
from tests.rigs import paths

ROOT = paths.ROOT / "schemas"
CURRENT = sorted(ROOT.glob("*.avsc"))
RELEASED = sorted((ROOT / "released").glob("*.avsc"))


def _full(doc: dict[str, Any]) -> str:
    return f"{doc['namespace']}.{doc['name']}"


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _released_of(current: Path) -> list[Path]:
    """Released versions of the same record (same full name, so the same major version)."""
    name = _full(_load(current))
    return [p for p in RELEASED if _full(_load(p)) == name]


def _decimals(schema: Any, path: str = "") -> dict[str, tuple[int, int]]:
    """Every decimal in a schema by field path, e.g. `totals[].cost` -> (26, 6)."""
    out: dict[str, tuple[int, int]] = {}
    if isinstance(schema, list):
        for branch in schema:
            out.update(_decimals(branch, path))
    elif isinstance(schema, dict):
        if schema.get("logicalType") == "decimal":
            out[path] = (int(schema["precision"]), int(schema.get("scale", 0)))
        if schema.get("type") == "record":
            for f in schema["fields"]:
                out.update(_decimals(f["type"], f"{path}.{f['name']}" if path else f["name"]))
        elif schema.get("type") == "array":
            out.update(_decimals(schema["items"], f"{path}[]"))
        elif schema.get("type") == "map":
            out.update(_decimals(schema["values"], f"{path}{{}}"))
        elif isinstance(schema.get("type"), dict | list):
            out.update(_decimals(schema["type"], path))
    return out


@pytest.mark.parametrize("current", CURRENT, ids=lambda p: p.name)
def test_every_current_schema_is_a_released_version(current: Path) -> None:
    """A schema change lands with its copy in released/, so the compatibility checks below
    cover every version a consumer may have seen."""
    text = current.read_bytes()
    assert any(p.read_bytes() == text for p in _released_of(current)), (
        f"{current.name} differs from every released version: copy it into schemas/released/")


def test_the_v1_contract_is_released() -> None:
    v1 = {"billing_record.v1.avsc", "period_manifest.v1.avsc", "checkpoint.v1.avsc"}
    assert v1 <= {p.name for p in CURRENT} and v1 <= {p.name for p in RELEASED}


@pytest.mark.parametrize("current", CURRENT, ids=lambda p: p.name)
def test_current_reads_every_released_version(current: Path) -> None:
    released = _released_of(current)
    assert released, f"{current.name} has no released version in schemas/released/"
    problems = level_problems("BACKWARD_TRANSITIVE", current.read_text(), [p.read_text() for p in released])
    assert problems == []


@pytest.mark.parametrize("current", CURRENT, ids=lambda p: p.name)
def test_decimal_precision_and_scale_never_change(current: Path) -> None:
    """Avro resolution ignores logical types, so a changed scale would pass the checker and
    silently rescale every consumer's numbers."""
    now = _decimals(_load(current))
    for old in _released_of(current):
        before = _decimals(_load(old))
        assert {k: now[k] for k in before if k in now} == {k: v for k, v in before.items() if k in now}


@pytest.mark.parametrize("path", CURRENT + RELEASED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_namespace_carries_the_major_version_of_the_file(path: Path) -> None:
    doc = _load(path)
    # A later released version of the same major carries the day it landed.
    major = re.search(r"\.v(\d+)(\.\d{4}-\d{2}-\d{2})?\.avsc$", path.name)
    assert major, f"{path.name} must be named <record>.v<major>[.<date>].avsc"
    assert doc["namespace"].endswith(f".v{major.group(1)}")
    avro.schema.parse(path.read_text())  # valid for the reference implementation too


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.name)
def test_every_record_and_field_has_a_doc(path: Path) -> None:
    def walk(schema: Any, where: str) -> list[str]:
        missing: list[str] = []
        if isinstance(schema, list):
            for branch in schema:
                missing += walk(branch, where)
        elif isinstance(schema, dict):
            if schema.get("type") == "record":
                if not schema.get("doc"):
                    missing.append(where or schema["name"])
                for f in schema["fields"]:
                    if not f.get("doc"):
                        missing.append(f"{where}.{f['name']}")
                    missing += walk(f["type"], f"{where}.{f['name']}")
            elif schema.get("type") in ("array", "map"):
                missing += walk(schema.get("items", schema.get("values")), where)
        return missing

    assert walk(_load(path), "") == []


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.name)
def test_nullable_fields_default_to_null(path: Path) -> None:
    """A union with null must list null first and default to it, so it can be added later."""
    def fields(schema: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if isinstance(schema, dict):
            if schema.get("type") == "record":
                for f in schema["fields"]:
                    out.append(f)
                    out += fields(f["type"])
            elif schema.get("type") in ("array", "map"):
                out += fields(schema.get("items", schema.get("values")))
        return out

    for f in fields(_load(path)):
        if isinstance(f["type"], list) and "null" in f["type"]:
            assert f["type"][0] == "null" and "default" in f and f["default"] is None, f["name"]


# --------------------------------------------------------------------------------------------
# The checks catch what they are for
# --------------------------------------------------------------------------------------------

BILLING = ROOT / "billing_record.v1.avsc"


def _mutated(change: Any) -> str:
    doc = _load(BILLING)
    change(doc)
    return json.dumps(doc)


def test_a_new_field_without_default_is_caught() -> None:
    bad = _mutated(lambda d: d["fields"].append({"name": "zone", "type": "string", "doc": "x"}))
    problems = level_problems("BACKWARD_TRANSITIVE", bad, [BILLING.read_text()])
    assert problems and "reader_field_missing_default_value" in problems[0] and "zone" in problems[0]


def test_a_new_field_with_a_default_passes() -> None:
    good = _mutated(lambda d: d["fields"].append(
        {"name": "zone", "type": ["null", "string"], "default": None, "doc": "x"}))
    assert level_problems("BACKWARD_TRANSITIVE", good, [BILLING.read_text()]) == []


def test_a_retyped_field_is_caught() -> None:
    def retype(d: dict[str, Any]) -> None:
        next(f for f in d["fields"] if f["name"] == "revision")["type"] = "string"

    assert compatibility_problems(_mutated(retype), BILLING.read_text())


def test_a_renamed_field_is_caught() -> None:
    def rename(d: dict[str, Any]) -> None:
        next(f for f in d["fields"] if f["name"] == "cluster")["name"] = "cluster_name"

    assert compatibility_problems(_mutated(rename), BILLING.read_text())


def test_a_changed_decimal_scale_is_invisible_to_avro_but_caught_by_our_rule() -> None:
    def rescale(d: dict[str, Any]) -> None:
        next(f for f in d["fields"] if f["name"] == "usage_quantity")["type"]["scale"] = 6

    changed = _mutated(rescale)
    assert compatibility_problems(changed, BILLING.read_text()) == []
    assert _decimals(json.loads(changed))["usage_quantity"] != _decimals(_load(BILLING))["usage_quantity"]


def test_transitive_checks_every_version_not_just_the_latest() -> None:
    v1 = BILLING.read_text()
    # v2 drops price_version (a string); v3 brings it back as a long with a default: v3 reads
    # v2 data (default) but not v1 data (string vs long).
    v2 = _mutated(lambda d: d.update(fields=[f for f in d["fields"] if f["name"] != "price_version"]))

    def readd(d: dict[str, Any]) -> None:
        field = next(f for f in d["fields"] if f["name"] == "price_version")
        field.update(type="long", default=0)

    v3 = _mutated(readd)
    assert level_problems("BACKWARD", v3, [v1, v2]) == []
    problems = level_problems("BACKWARD_TRANSITIVE", v3, [v1, v2])
    assert problems and "type_mismatch" in problems[0]

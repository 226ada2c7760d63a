"""A FOCUS dataset validator driven by the specification's own column list (spec/columns.json).

`validate(header, rows, ...)` returns one line per problem, empty when the CSV satisfies:
- every Mandatory column is present, no column is unknown unless it has the `x_` prefix, no
  column twice, FOCUS columns before custom ones (Column Handling);
- no null (empty field) where the column does not allow one, and the conditional nullability
  rules (`conditions`);
- each non-null value has its column's data type and value format: Numeric, Date/Time,
  Currency, Unit, Key-Value and JSON Object formats as the attribute pages define them, and the
  allowed values;
- AllocatedMethodDetails objects follow their object requirements, and the AllocatedRatio of the
  allocated charges of one origin charge sums to 1.

The rules come from the specification (spec/README.md), not from `exporter.focus`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

SPEC = Path(__file__).parent / "focus-spec" / "columns.json"

Row = Mapping[str, str]

# Numeric Format: an integer, a decimal or E notation "mEn"; a sign only for negatives, in the
# exponent only when it is negative; no separators, symbols or qualifiers.
NUMERIC = re.compile(r"^-?\d+(\.\d+)?(E-?\d+)?$")
# Date/Time Format: extended ISO 8601 in UTC, 'YYYY-MM-DDTHH:mm:ssZ'.
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# Currency Format: ISO 4217 three-letter code for national currencies.
CURRENCY = re.compile(r"^[A-Z]{3}$")
# Unit Format: the time units of its "Time-based Unit Names" table, and its five shapes.
_TIME = r"(Year|Month|Week|Day|Hour|Minute|Second)"
_UNITS = r"[A-Za-z]+"
UNIT = re.compile(
    rf"^({_UNITS}"                                   # <plural-units>
    rf"|{_UNITS}-{_TIME}s"                           # <singular-unit>-<plural-time-units>
    rf"|{_UNITS}/{_TIME}"                            # <plural-units>/<singular-time-unit>
    rf"|\d+ {_UNITS}"                                # <quantity> <plural-units>
    rf"|{_UNITS}/\d+ {_TIME}s)$"                     # <plural-units>/<interval> <plural-time-units>
)


@cache
def spec() -> dict[str, Any]:
    """The extract: `sources` and `columns` by id."""
    doc = json.loads(SPEC.read_text(encoding="utf-8"))
    return {"sources": doc["sources"], "columns": {c["id"]: c for c in doc["columns"]}}


def columns() -> dict[str, dict[str, Any]]:
    return spec()["columns"]  # type: ignore[no-any-return]


def mandatory() -> set[str]:
    return {c for c, d in columns().items() if d["feature_level"] == "Mandatory"}


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate key in {keys}")
    return dict(pairs)


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text, object_pairs_hook=_unique_object, parse_float=Decimal)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _check_format(col: dict[str, Any], value: str, row: Row) -> str | None:
    """Why `value` does not fit the column's type and format, or None."""
    fmt = (col["value_format"] or "").lower()
    dtype = (col["data_type"] or "").lower()
    if dtype == "decimal" or "numeric" in fmt:
        if not NUMERIC.fullmatch(value):
            return "not in Numeric Format"
    elif dtype == "date/time":
        if not DATE_TIME.fullmatch(value):
            return "not in Date/Time Format (YYYY-MM-DDTHH:mm:ssZ)"
        try:
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return "not a valid date/time"
    elif dtype == "json":
        try:
            obj = _json_object(value)
        except ValueError as exc:
            return f"not a JSON object ({exc})"
        if "key-value" in fmt or "keyvalue" in fmt:
            bad = [k for k, v in obj.items() if isinstance(v, dict | list)]
            if bad:
                return f"Key-Value Format values must not be objects or arrays: {bad}"
    if "currency" in fmt and not CURRENCY.fullmatch(value):
        return "not an ISO 4217 currency code"
    if fmt.startswith("unit format") and not UNIT.fullmatch(value):
        return "not in Unit Format"
    if fmt.startswith("allowed values"):
        allowed = col["allowed_values"]
        if value not in allowed:
            return f"not one of the allowed values {allowed}"
        parents = col.get("allowed_parent_values")
        if parents is not None:
            pairs = set(zip(parents, allowed, strict=True))
            if (row.get("ServiceCategory"), value) not in pairs:
                return f"not a subcategory of ServiceCategory {row.get('ServiceCategory')!r}"
    return None


def _holds(clause: Mapping[str, Any], row: Row, allocated: bool) -> bool:
    if "row" in clause:
        return allocated is clause["is"]
    value = row.get(clause["column"]) or None  # absent or empty: null
    if "is_null" in clause:
        return (value is None) is clause["is_null"]
    if "in" in clause:
        return value in clause["in"]
    return value not in clause["not_in"]


def _allocated_details(value: str) -> list[str]:
    """The AllocatedMethodDetailsObject requirements (FOCUS 1.3)."""
    obj = _json_object(value)
    problems: list[str] = []
    bad_top = [k for k in obj if k != "Elements" and not k.startswith("x_")]
    if bad_top:
        problems.append(f"unknown keys {bad_top} (custom keys need the x_ prefix)")
    elements = obj.get("Elements")
    if not isinstance(elements, list) or not elements:
        return [*problems, "Elements must be a non-empty array"]
    for i, el in enumerate(elements):
        if not isinstance(el, dict):
            problems.append(f"Elements[{i}] is not an object")
            continue
        if not isinstance(el.get("AllocatedRatio"), int | Decimal) or isinstance(
                el.get("AllocatedRatio"), bool):
            problems.append(f"Elements[{i}].AllocatedRatio must be numeric")
        if "UsageQuantity" in el and not isinstance(el.get("UsageUnit"), str):
            problems.append(f"Elements[{i}].UsageUnit must be present with UsageQuantity")
        if "UsageQuantity" in el and (not isinstance(el["UsageQuantity"], int | Decimal)
                                      or isinstance(el["UsageQuantity"], bool)):
            problems.append(f"Elements[{i}].UsageQuantity must be numeric")
        bad = [k for k in el if k not in ("AllocatedRatio", "UsageUnit", "UsageQuantity")
               and not k.startswith("x_")]
        if bad:
            problems.append(f"Elements[{i}] unknown keys {bad}")
    return problems


def validate(header: Sequence[str], rows: Sequence[Row], *,
             allocated: Callable[[Row], bool] = lambda row: False,
             origin: Callable[[Row], Hashable] | None = None) -> list[str]:
    """Every way `header`/`rows` (CSV text, '' for null) break the FOCUS column rules.

    `allocated(row)` says whether a row is an allocated charge of a split cost allocation;
    `origin(row)` names its origin charge, so that the AllocatedRatio sums can be checked.
    """
    cols = columns()
    problems: list[str] = []
    for name in sorted(mandatory() - set(header)):
        problems.append(f"mandatory column {name} is missing")
    for name in header:
        if name not in cols and not name.startswith("x_"):
            problems.append(f"column {name} is not a FOCUS column and has no x_ prefix")
    dup = sorted({n for n in header if list(header).count(n) > 1})
    if dup:
        problems.append(f"columns appear twice: {dup}")
    first_custom = next((i for i, n in enumerate(header) if n.startswith("x_")), len(header))
    late = [n for n in header[first_custom:] if not n.startswith("x_")]
    if late:
        problems.append(f"FOCUS columns after custom columns: {late}")

    ratios: dict[Hashable, Decimal] = {}
    for n, row in enumerate(rows, start=1):
        is_allocated = allocated(row)
        for name in header:
            col = cols.get(name)
            if col is None:
                continue
            value = row.get(name, "")
            where = f"row {n} {name}={value!r}"
            if value == "":
                if not col["allows_nulls"]:
                    problems.append(f"{where}: null, but the column allows no nulls")
            else:
                why = _check_format(col, value, row)
                if why:
                    problems.append(f"{where}: {why}")
            for rule in col.get("conditions", ()):
                if all(_holds(c, row, is_allocated) for c in rule["when"]):
                    if rule["null"] and value != "":
                        problems.append(f"{where}: {rule['level']} be null here ({rule['when']})")
                    if not rule["null"] and value == "":
                        problems.append(f"{where}: {rule['level']} NOT be null here ({rule['when']})")
        details = row.get("AllocatedMethodDetails", "")
        if details:
            try:
                problems += [f"row {n} AllocatedMethodDetails: {p}" for p in _allocated_details(details)]
            except ValueError as exc:
                problems.append(f"row {n} AllocatedMethodDetails: {exc}")
            else:
                if origin is not None and is_allocated:
                    total = sum((Decimal(str(e.get("AllocatedRatio", 0)))
                                 for e in _json_object(details).get("Elements", [])
                                 if isinstance(e, dict)), Decimal(0))
                    key = origin(row)
                    ratios[key] = ratios.get(key, Decimal(0)) + total
    for key, total in ratios.items():
        if total != 1:
            problems.append(f"AllocatedRatio of origin charge {key} sums to {total}, not 1")
    return problems

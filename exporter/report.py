"""Consumption report: chargeable units grouped by cost center, workload or org tree.

Every group is shown; there is no top-N truncation. Quantities are exact sums of the per-line
Decimals, displayed at the record scale.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from rich.console import Console
from rich.table import Table

from exporter.model import ChargeLine

GroupBy = Literal["costcenter", "costcenter-workload", "org"]
COLUMNS = (
    "cpu_usage", "cpu_request", "cpu_chargeable", "mem_usage", "mem_request", "mem_chargeable",
)
DISPLAY_SCALE = Decimal("0.000001")

_KEYS: dict[str, tuple[str, ...]] = {
    "costcenter": ("cluster", "costcenter"),
    "costcenter-workload": ("cluster", "costcenter", "namespace", "workload_kind", "workload"),
    "org": ("businessunit", "department", "team", "namespace"),
}


def _group_values(line: ChargeLine, by: GroupBy) -> tuple[str, ...]:
    org = line.org.values
    w = line.workload
    fields = {
        "cluster": w.cluster, "namespace": w.namespace, "workload_kind": w.kind,
        "workload": w.name, **org,
    }
    return tuple(fields[k] for k in _KEYS[by])


@dataclass(slots=True)
class Row:
    group: tuple[str, ...]
    values: dict[str, Decimal]


def aggregate(lines: Sequence[ChargeLine], by: GroupBy) -> list[Row]:
    """Sum usage, request and chargeable per group and resource; rows sorted by group."""
    rows: dict[tuple[str, ...], dict[str, Decimal]] = {}
    for ln in lines:
        g = _group_values(ln, by)
        vals = rows.setdefault(g, {c: Decimal(0) for c in COLUMNS})
        prefix = "cpu" if ln.resource == "cpu" else "mem"
        vals[f"{prefix}_usage"] += ln.usage
        vals[f"{prefix}_request"] += ln.request
        vals[f"{prefix}_chargeable"] += ln.chargeable
    return [Row(g, rows[g]) for g in sorted(rows)]


def key_names(by: GroupBy) -> tuple[str, ...]:
    return _KEYS[by]


def _fmt(v: Decimal) -> str:
    return str(v.quantize(DISPLAY_SCALE, rounding=ROUND_HALF_EVEN))


def render_csv(rows: Sequence[Row], by: GroupBy) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*key_names(by), *COLUMNS])
    for r in rows:
        writer.writerow([*r.group, *(_fmt(r.values[c]) for c in COLUMNS)])
    return buf.getvalue()


def render_json(rows: Sequence[Row], by: GroupBy, window: tuple[str, str]) -> str:
    doc = {
        "from": window[0], "to": window[1], "group_by": by,
        "units": {"cpu": "Core-Hours", "mem": "GiB-Hours"},
        "rows": [
            {**dict(zip(key_names(by), r.group, strict=True)),
             **{c: _fmt(r.values[c]) for c in COLUMNS}}
            for r in rows
        ],
    }
    return json.dumps(doc, indent=2)


def render_table(rows: Sequence[Row], by: GroupBy, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for k in key_names(by):
        table.add_column(k)
    headers = ("CPU used", "CPU req", "CPU charge", "GiB used", "GiB req", "GiB charge")
    for h in headers:
        table.add_column(h + (" (Core-h)" if h.startswith("CPU") else "-h"), justify="right")
    totals = {c: Decimal(0) for c in COLUMNS}
    for r in rows:
        table.add_row(*r.group, *(_fmt(r.values[c]) for c in COLUMNS))
        for c in COLUMNS:
            totals[c] += r.values[c]
    table.add_section()
    table.add_row("TOTAL", *([""] * (len(key_names(by)) - 1)), *(_fmt(totals[c]) for c in COLUMNS))
    return table


def print_table(table: Table, write: Callable[[str], object] | None = None) -> None:
    console = Console(width=200) if write is None else Console(file=io.StringIO(), width=200)
    console.print(table)
    if write is not None:
        file = console.file
        assert isinstance(file, io.StringIO)
        write(file.getvalue())

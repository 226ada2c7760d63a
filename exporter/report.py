"""Consumption report: chargeable units grouped by cost center, workload or org tree.

Every group is shown; there is no top-N truncation. Quantities are exact sums of the per-line
Decimals, displayed at the record scale. Every format states the sample steps the quantities
were measured at (Sysdig's retention decides them per period, `exporter.retention`).
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
from exporter.units import method_step

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
    steps: tuple[int, ...] = ()
    """The sample steps (seconds) of the lines summed into this row, ascending."""


FINEST_STEP = 10  # Sysdig's finest sampling; a coarser step is worth a warning


def coarse_warning(period_steps: Sequence[int]) -> str | None:
    """The warning line for periods measured coarser than 10 s (one step per period), or None."""
    coarse = [s for s in period_steps if s > FINEST_STEP]
    if not coarse:
        return None
    return (f"warning: {len(coarse)} of {len(period_steps)} periods measured at "
            f"{steps_phrase(sorted(set(coarse)))} steps, coarser than {FINEST_STEP}s: Sysdig keeps "
            f"no {FINEST_STEP}s data for them any more (retention)")


def line_step(line: ChargeLine) -> int:
    """The sample step a line was measured at, from its method."""
    step = method_step(line.method)
    if step is None:
        raise ValueError(f"report: unknown calculation method {line.method!r}")
    return step


def aggregate(lines: Sequence[ChargeLine], by: GroupBy) -> list[Row]:
    """Sum usage, request and chargeable per group and resource; rows sorted by group."""
    rows: dict[tuple[str, ...], dict[str, Decimal]] = {}
    steps: dict[tuple[str, ...], set[int]] = {}
    for ln in lines:
        g = _group_values(ln, by)
        vals = rows.setdefault(g, {c: Decimal(0) for c in COLUMNS})
        steps.setdefault(g, set()).add(line_step(ln))
        prefix = "cpu" if ln.resource == "cpu" else "mem"
        vals[f"{prefix}_usage"] += ln.usage
        vals[f"{prefix}_request"] += ln.request
        vals[f"{prefix}_chargeable"] += ln.chargeable
    return [Row(g, rows[g], tuple(sorted(steps[g]))) for g in sorted(rows)]


def all_steps(rows: Sequence[Row]) -> tuple[int, ...]:
    """Every step of `rows`, ascending."""
    return tuple(sorted({s for r in rows for s in r.steps}))


def steps_phrase(steps: Sequence[int]) -> str:
    """`10s`, `10s and 60s`, `10s, 60s and 600s`."""
    names = [f"{s}s" for s in steps]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def key_names(by: GroupBy) -> tuple[str, ...]:
    return _KEYS[by]


def _fmt(v: Decimal) -> str:
    return str(v.quantize(DISPLAY_SCALE, rounding=ROUND_HALF_EVEN))


def render_csv(rows: Sequence[Row], by: GroupBy) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*key_names(by), *COLUMNS, "step_seconds"])
    for r in rows:
        writer.writerow([*r.group, *(_fmt(r.values[c]) for c in COLUMNS),
                         " ".join(str(s) for s in r.steps)])
    return buf.getvalue()


def render_json(rows: Sequence[Row], by: GroupBy, window: tuple[str, str]) -> str:
    doc = {
        "from": window[0], "to": window[1], "group_by": by,
        "units": {"cpu": "Core-Hours", "mem": "GiB-Hours"},
        "step_seconds": list(all_steps(rows)),
        "rows": [
            {**dict(zip(key_names(by), r.group, strict=True)),
             **{c: _fmt(r.values[c]) for c in COLUMNS}, "step_seconds": list(r.steps)}
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

"""Consumption report: chargeable units grouped by cost center, workload or org tree.

Every group is shown; there is no top-N truncation. Quantities and costs are the records' own:
each line is rounded as its billing record is (`exporter.pricing`: quantities to the record's
9 decimals, cost from the rounded quantity times the unit price, to 6), and a row is the exact
sum of those, so CSV and JSON match what a consumer adds up from the records. Only the table
rounds further, for display, and says so. Workload kinds are spelled as records spell them
(`Deployment`). Every format states the sample steps the quantities were measured at (Sysdig's
retention decides them per period, `exporter.sysdig.retention`, as for the worker).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from rich.console import Console, RenderableType
from rich.table import Table

from exporter.idle import IDLE_ALLOCATION, IDLE_DISTRIBUTION, IDLE_SOURCE_ALLOCATION
from exporter.model import (
    RESOURCES,
    STORAGE,
    PricedLine,
    Resource,
    family,
    resource_order,
    unit_of,
)
from exporter.money import DecimalSpec, quantize
from exporter.pricing import quantize_quantity
from exporter.records import BILLABLE_ALLOCATIONS, kubernetes_kind
from exporter.shared_costs import SHARED_DISTRIBUTION
from exporter.units import method_step

# What a report row adds up: the billable allocations and the idle capacity nobody was billed.
REPORTED_ALLOCATIONS = BILLABLE_ALLOCATIONS | {IDLE_ALLOCATION}
_SHARES = frozenset({SHARED_DISTRIBUTION, IDLE_DISTRIBUTION})
_ZERO = quantize_quantity(Decimal(0))  # printed as a record's 0: `0.000000000`

GroupBy = Literal["costcenter", "costcenter-workload", "org"]
_WORDS = {"usage": "used", "request": "requested", "chargeable": "chargeable"}


def columns_of(resource: Resource) -> tuple[str, ...]:
    """The machine columns of `resource`: usage, request and chargeable, each named with its
    unit (`model.unit_of`) as the `core_hours`/`gib_hours` keys of the backfill summary are:
    `cpu_usage_core_hours`, `mem_chargeable_gib_hours`, `gpu.mig-1g.5gb_request_gpu_hours`.
    A storage class has no usage column: a claim's usage is not measured (its records carry 0).
    """
    prefix = "mem" if resource == "memory" else resource
    unit = unit_of(resource).lower().replace("-", "_")
    return tuple(f"{prefix}_{kind}_{unit}" for kind in _kinds(resource))


def _kinds(resource: Resource) -> tuple[str, ...]:
    return ("request", "chargeable") if family(resource) == STORAGE else tuple(_WORDS)


COLUMNS: tuple[str, ...] = (*columns_of("cpu"), *columns_of("memory"))
"""The columns of every report; GPUs and storage classes add theirs when the window has them."""


def header_of(resource: Resource) -> tuple[str, ...]:
    """The table's headers of `columns_of(resource)`: the unit (and the resource, but for cpu
    and memory, whose units name them), then `used`, `requested` or `chargeable`."""
    name = unit_of(resource) if resource in RESOURCES else f"{unit_of(resource)} {resource}"
    return tuple(f"{name}\n{_WORDS[kind]}" for kind in _kinds(resource))


# The table's display scale; the machine formats carry the records' full scale.
DISPLAY = DecimalSpec(40, 6)
DISPLAY_NOTE = ("Quantities rounded to 6 decimals for display; --format csv and json carry the "
                "records' 9.")

_KEYS: dict[str, tuple[str, ...]] = {
    "costcenter": ("cluster", "costcenter"),
    "costcenter-workload": ("cluster", "costcenter", "namespace", "workload_kind", "workload"),
    "org": ("businessunit", "department", "team", "namespace"),
}


def _group_values(line: PricedLine, by: GroupBy) -> tuple[str, ...]:
    ln = line.line
    w = ln.workload
    fields = {
        "cluster": w.cluster, "namespace": w.namespace, "workload_kind": kubernetes_kind(w.kind),
        "workload": w.name, **ln.org.values,
    }
    return tuple(fields[k] for k in _KEYS[by])


@dataclass(slots=True)
class Row:
    group: tuple[str, ...]
    values: dict[str, Decimal]
    """Per column of `COLUMNS` and of the row's other resources (`columns_of`): the sum of the
    lines' record-rounded quantities; a column absent is 0."""
    resources: set[Resource] = field(default_factory=lambda: set(RESOURCES))
    """The resources of the row's lines, cpu and memory always."""
    steps: tuple[int, ...] = ()
    """The sample steps (seconds) of the lines summed into this row, ascending."""
    cost: Decimal | None = None
    """The sum of the lines' costs (None without a rate card)."""
    currency: str | None = None


FINEST_STEP = 10  # Sysdig's finest sampling; a coarser step is worth a warning


def coarse_warning(period_steps: Sequence[int], resolution: int = FINEST_STEP) -> str | None:
    """The warning line for periods measured coarser than 10 s (one step per period), or None.

    It gives the reason: `periods.resolution` when configured coarser than 10 s, and Sysdig's
    retention for periods measured coarser than that resolution.
    """
    coarse = [s for s in period_steps if s > FINEST_STEP]
    if not coarse:
        return None
    reasons = []
    if resolution > FINEST_STEP:
        reasons.append(f"periods.resolution is {resolution}s")
    rolled_up = [s for s in coarse if s > resolution]
    if rolled_up:
        which = "them" if len(rolled_up) == len(coarse) else f"{len(rolled_up)} of them"
        reasons.append(f"Sysdig keeps no {resolution}s data for {which} any more (retention)")
    return (f"warning: {len(coarse)} of {len(period_steps)} periods measured at "
            f"{steps_phrase(sorted(set(coarse)))} steps, coarser than {FINEST_STEP}s: "
            + "; ".join(reasons))


def line_step(line: PricedLine) -> int:
    """The sample step a line was measured at, from its method."""
    step = method_step(line.line.method)
    if step is None:
        raise ValueError(f"report: unknown calculation method {line.line.method!r}")
    return step


def aggregate(lines: Sequence[PricedLine], by: GroupBy) -> list[Row]:
    """Sum usage, request, chargeable (and cost when priced) per group; rows sorted by group.

    Each line enters at its record's rounding (`quantize_quantity`; its cost already is), so a
    row equals the sum of its records. With shared costs distributed, usage and request are
    counted where they were measured (direct and shared-source lines) and chargeable and cost
    where they are billed (direct and shared-distribution lines), as records are summed
    (`records.BILLABLE_ALLOCATIONS`): nothing is counted twice. Idle capacity (exporter/idle.py)
    is reported where it is billed: on the cost centers (`idle-distribution`) when the rate
    card distributes it, else on its own `__idle__` row (`idle`); never both.
    """
    rows: dict[tuple[str, ...], Row] = {}
    steps: dict[tuple[str, ...], set[int]] = {}
    for priced in lines:
        if priced.line.allocation == IDLE_SOURCE_ALLOCATION:
            continue  # restated by its idle-distribution shares
        g = _group_values(priced, by)
        row = rows.get(g)
        if row is None:
            row = rows[g] = Row(g, dict.fromkeys(COLUMNS, _ZERO))
        ln = priced.line
        columns = columns_of(ln.resource)
        if len(columns) == 2 and ln.usage:
            raise ValueError(f"report: {ln.resource} of {'/'.join(ln.workload)} has a usage, "
                             "which no column holds")
        usage, request, chargeable = (None, *columns) if len(columns) == 2 else columns
        row.resources.add(ln.resource)
        vals = row.values
        seen = steps.setdefault(g, set())
        if ln.allocation not in _SHARES:  # a share was measured on its sources' steps
            seen.add(line_step(priced))
            if usage is not None:
                vals[usage] = vals.get(usage, _ZERO) + quantize_quantity(ln.usage)
            vals[request] = vals.get(request, _ZERO) + quantize_quantity(ln.request)
        if ln.allocation not in REPORTED_ALLOCATIONS:
            continue
        vals[chargeable] = vals.get(chargeable, _ZERO) + quantize_quantity(ln.chargeable)
        if priced.cost is not None:
            row.cost = priced.cost if row.cost is None else row.cost + priced.cost
            row.currency = priced.currency
    for g, row in rows.items():
        row.steps = tuple(sorted(steps[g]))
    return [rows[g] for g in sorted(rows)]


def report_resources(rows: Sequence[Row]) -> list[Resource]:
    """The resources of `rows`: cpu and memory always, then every other resource of any row,
    GPUs then storage classes, each by name (`model.resource_order`)."""
    return sorted({r for row in rows for r in row.resources} | set(RESOURCES), key=resource_order)


def report_columns(rows: Sequence[Row]) -> tuple[str, ...]:
    """The quantity columns of `rows`, those of each of `report_resources(rows)` in turn."""
    return tuple(c for r in report_resources(rows) for c in columns_of(r))


def currency_of(rows: Sequence[Row]) -> str | None:
    """The currency of the rows' costs (a rate card has one), or None when unpriced."""
    return next((r.currency for r in rows if r.currency is not None), None)


def all_steps(rows: Sequence[Row]) -> tuple[int, ...]:
    """Every step of `rows`, ascending."""
    return tuple(sorted({s for r in rows for s in r.steps}))


def steps_phrase(steps: Sequence[int]) -> str:
    """`10s`, `10s and 60s`, `10s, 60s and 600s`."""
    names = [f"{s}s" for s in steps]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def key_names(by: GroupBy) -> tuple[str, ...]:
    return _KEYS[by]


def _exact(v: Decimal) -> str:
    """A record-scale value as plain digits (`0.000000000`, never `0E-9`)."""
    return format(v, "f")


def _display(v: Decimal) -> str:
    return format(quantize(v, DISPLAY, "report value"), "f")


def _cost_columns(rows: Sequence[Row]) -> tuple[str, ...]:
    return ("cost", "currency") if currency_of(rows) is not None else ()


def _costs(row: Row, priced: bool) -> list[str]:
    if not priced:
        return []
    return [_exact(row.cost if row.cost is not None else Decimal(0)), row.currency or ""]


def render_csv(rows: Sequence[Row], by: GroupBy) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cost_columns = _cost_columns(rows)
    columns = report_columns(rows)
    writer.writerow([*key_names(by), *columns, *cost_columns, "step_seconds"])
    for r in rows:
        writer.writerow([*r.group, *(_exact(r.values.get(c, _ZERO)) for c in columns),
                         *_costs(r, bool(cost_columns)), " ".join(str(s) for s in r.steps)])
    return buf.getvalue()


def render_json(rows: Sequence[Row], by: GroupBy, window: tuple[str, str]) -> str:
    cost_columns = _cost_columns(rows)
    columns = report_columns(rows)
    doc: dict[str, Any] = {
        "from": window[0], "to": window[1], "group_by": by,
        "units": {c: unit_of(r) for r in report_resources(rows) for c in columns_of(r)},
        "step_seconds": list(all_steps(rows)),
    }
    if cost_columns:
        doc["currency"] = currency_of(rows)
    doc["rows"] = [
        {**dict(zip(key_names(by), r.group, strict=True)),
         **{c: _exact(r.values.get(c, _ZERO)) for c in columns},
         **dict(zip(cost_columns, _costs(r, bool(cost_columns)), strict=True)),
         "step_seconds": list(r.steps)}
        for r in rows
    ]
    return json.dumps(doc, indent=2)


def render_table(rows: Sequence[Row], by: GroupBy, title: str) -> Table:
    table = Table(title=title, caption=DISPLAY_NOTE, show_lines=False)
    for k in key_names(by):
        table.add_column(k)
    resources = report_resources(rows)
    columns = report_columns(rows)
    for resource in resources:
        for header in header_of(resource):
            table.add_column(header, justify="right")
    currency = currency_of(rows)
    if currency is not None:
        table.add_column(f"Cost ({currency})", justify="right")
    totals = dict.fromkeys(columns, _ZERO)
    total_cost = _ZERO
    for r in rows:
        cost = [] if currency is None else [_exact(r.cost or _ZERO)]
        table.add_row(*r.group, *(_display(r.values.get(c, _ZERO)) for c in columns), *cost)
        for c in columns:
            totals[c] += r.values.get(c, _ZERO)
        total_cost += r.cost or _ZERO
    table.add_section()
    table.add_row("TOTAL", *([""] * (len(key_names(by)) - 1)),
                  *(_display(totals[c]) for c in columns),
                  *([] if currency is None else [_exact(total_cost)]))
    return table


def print_table(table: RenderableType, write: Callable[[str], object] | None = None, *,
                fit: bool = False) -> None:
    """Print `table` 200 columns wide; with `fit`, wider when its cells need it, so that no
    name or number is cut short."""
    width = 200
    if fit:
        width = max(width, Console(file=io.StringIO(), width=100_000).measure(table).maximum)
    console = Console(width=width) if write is None else Console(file=io.StringIO(), width=width)
    console.print(table)
    if write is not None:
        file = console.file
        assert isinstance(file, io.StringIO)
        write(file.getvalue())

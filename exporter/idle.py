"""Idle capacity: what the clusters' nodes offered and no workload was charged for.

Per (period, cluster, resource), at the record scale (9 decimals), with `A` the nodes'
allocatable integrated over the period's steps exactly as the charges are (`units.unit_hours`
of the `allocatable` answer, then quantized once) and `C` the sum of the cluster's billable
chargeable quantities (each line quantized to the record scale first, as its record carries it):

    idle       = max(0, A - C)
    overcommit = max(0, C - A)
    C + idle - overcommit == A        exactly, at the record scale

Both sides are multiples of 10^-9, so the difference is exact: a consumer adding a cluster's
billable records and its `__idle__` record gets its allocatable capacity to the last decimal
(less the overcommit, which the manifest carries). Idle is never negative: when the workloads
were charged more than the nodes offered (usage above requests on overcommitted nodes), idle is
0 and the excess is the overcommit.

Each (cluster, resource) with allocatable series gets one `__idle__` line: namespace, kind and
name `__idle__`, every org key `__idle__` (source `idle`), allocation `idle`, usage and request 0,
chargeable the idle quantity, the period's method (idle is measured at the charges' grain and
step). `distribute` spreads an idle line's quantity and cost over cost centers by the rate card's
rule (`RateCard.idle`): `proportional` to their charges in the cluster, `even`, or fixed
`weights`; the shares are `idle-distribution` lines and the idle line, kept for audit, becomes
`idle-source` (as a shared-cost pool's sources become `shared-source`).

Consumers: a team's bill adds `direct`, `shared-distribution` and `idle-distribution`; a
cluster's capacity adds those and `idle` (undistributed idle), never `idle-source`, which its
`idle-distribution` shares restate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from exporter.model import (
    ORG_KEYS,
    ChargeLine,
    OrgAssignment,
    PeriodUsage,
    PricedLine,
    Resource,
    WorkloadKey,
)
from exporter.money import largest_remainder
from exporter.pricing import COST_SCALE, QUANTITY_SCALE, IdleRule, quantize_cost, quantize_quantity
from exporter.units import method_id, to_unit_hours

IDLE = "__idle__"
IDLE_ALLOCATION = "idle"
IDLE_DISTRIBUTION = "idle-distribution"
IDLE_SOURCE_ALLOCATION = "idle-source"  # an idle line whose quantity was distributed
IDLE_SOURCE = "idle"  # the org label source of an idle line
# Lines whose quantity is a cluster's charges (what idle is the rest of).
CHARGED_ALLOCATIONS = frozenset({"direct", "shared-distribution"})
IDLE_ALLOCATIONS = frozenset({IDLE_ALLOCATION, IDLE_SOURCE_ALLOCATION, IDLE_DISTRIBUTION})
SHARED_FROM_LABEL = "x_shared_from"  # as exporter.shared_costs: where a share comes from
_ORG = OrgAssignment({k: IDLE for k in ORG_KEYS}, {k: IDLE_SOURCE for k in ORG_KEYS})
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Capacity:
    """One (cluster, resource) of a period at the record scale: `charged + idle - overcommit ==
    allocatable`, with `idle` and `overcommit` never negative and at most one of them positive."""

    cluster: str
    resource: Resource
    allocatable: Decimal
    charged: Decimal
    idle: Decimal
    overcommit: Decimal


def is_idle(line: ChargeLine) -> bool:
    """Whether `line` is an idle line or a share of one (not a workload's charge)."""
    return line.allocation in IDLE_ALLOCATIONS


def capacities(usage: PeriodUsage, lines: Iterable[ChargeLine]) -> list[Capacity]:
    """Per (cluster, resource) of `usage.allocatable`, sorted, its capacity (module docstring);
    `lines` are the period's charge lines (idle lines and `shared-source` ones are left out)."""
    charged: dict[tuple[str, str], Decimal] = {}
    for ln in lines:
        if ln.allocation in CHARGED_ALLOCATIONS:
            key = (ln.workload.cluster, ln.resource)
            charged[key] = charged.get(key, _ZERO) + quantize_quantity(ln.chargeable)
    step = Decimal(usage.step_seconds)
    out: list[Capacity] = []
    for cluster in sorted(usage.allocatable):
        for resource, total in sorted(usage.allocatable[cluster].items()):
            a = quantize_quantity(to_unit_hours(total, resource, step))
            c = charged.get((cluster, resource), _ZERO)
            out.append(Capacity(cluster, resource, a, c, max(_ZERO, a - c), max(_ZERO, c - a)))
    return out


def idle_lines(usage: PeriodUsage, caps: Sequence[Capacity]) -> list[ChargeLine]:
    """One `__idle__` line per capacity (module docstring), in the order of `caps`."""
    method = method_id(usage.grain, usage.step_seconds)
    return [ChargeLine(
        period=usage.period, workload=WorkloadKey(c.cluster, IDLE, IDLE, IDLE),
        resource=c.resource, usage=_ZERO, request=_ZERO, chargeable=c.idle, org=_ORG, labels={},
        coverage=usage.coverage.get(c.cluster, _ZERO), method=method,
        allocation=IDLE_ALLOCATION) for c in caps]


def distribution_method(rule: IdleRule) -> str:
    """The method of the `idle-distribution` lines of `rule`: `idle-<method>/v1`."""
    return f"idle-{rule.method}/v1"


def distribute(priced: Sequence[PricedLine], rule: IdleRule | None) -> list[PricedLine]:
    """`priced` followed by the `idle-distribution` lines of its idle lines under `rule` (None:
    none). Recipients are cost centers (`costcenter` org value):

    - `proportional`: those with a positive charge (record scale) of the idle line's cluster
      and resource, weighted by it;
    - `even`: the same cost centers, weighted equally;
    - `weights`: the rule's cost centers, weighted as it says, whether they ran anything or not.

    Quantity and cost are split at their record scales by largest remainder
    (`money.largest_remainder`, as shared costs), so the shares add up to the idle line exactly.
    Each share is a line of the cluster, namespace and kind `__idle__`, named after its cost
    center, with that cost center and `__idle__` for the other org keys; unit price None (a
    share of a cost, not a price), and the label `x_shared_from` `__idle__/__idle__/__idle__`.
    A split idle line becomes `idle-source`; a zero idle line, or one without recipients, is
    not split and stays `idle`.
    """
    if rule is None:
        return list(priced)
    charges: dict[tuple[str, str], dict[str, Decimal]] = {}
    for p in priced:
        ln = p.line
        if ln.allocation in CHARGED_ALLOCATIONS:
            q = quantize_quantity(ln.chargeable)
            if q > 0:
                per = charges.setdefault((ln.workload.cluster, ln.resource), {})
                cc = ln.org.values.get("costcenter", "")
                per[cc] = per.get(cc, _ZERO) + q
    out = list(priced)
    extra: list[PricedLine] = []
    for i, p in enumerate(priced):
        ln = p.line
        if ln.allocation != IDLE_ALLOCATION:
            continue
        weights = _weights(rule, charges.get((ln.workload.cluster, ln.resource), {}))
        quantity = quantize_quantity(ln.chargeable)
        if not weights or quantity == 0:
            continue
        centers = sorted(weights)
        ws = [weights[c] for c in centers]
        q_shares = largest_remainder(quantity, ws, QUANTITY_SCALE)
        c_shares: Sequence[Decimal | None] = (
            largest_remainder(quantize_cost(p.cost), ws, COST_SCALE) if p.cost is not None
            else [None] * len(centers))
        out[i] = dataclasses.replace(p, line=dataclasses.replace(
            ln, allocation=IDLE_SOURCE_ALLOCATION))
        for center, q, c in zip(centers, q_shares, c_shares, strict=True):
            if q == 0 and not c:
                continue
            org = OrgAssignment({**_ORG.values, "costcenter": center}, _ORG.sources)
            line = dataclasses.replace(
                ln, workload=WorkloadKey(ln.workload.cluster, IDLE, IDLE, center),
                chargeable=q, org=org, labels={SHARED_FROM_LABEL: f"{IDLE}/{IDLE}/{IDLE}"},
                method=distribution_method(rule), allocation=IDLE_DISTRIBUTION)
            extra.append(PricedLine(line, None, c, p.currency if c is not None else None,
                                    p.price_version if c is not None else None))
    return [*out, *extra]


def _weights(rule: IdleRule, charged: Mapping[str, Decimal]) -> dict[str, Decimal]:
    if rule.method == "weights":
        return dict(rule.weights)
    if rule.method == "even":
        return {cc: Decimal(1) for cc in charged}
    return dict(charged)

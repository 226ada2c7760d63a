"""Shared costs: spread the usage of shared workloads over everyone else (off by default).

A line is shared when its namespace is in `shared_costs.namespaces` or when one of
`shared_costs.selectors` matches it (every pair of the selector equals the line's resolved org
value for an org key, or its other label for any other key).

Per (period, cluster, resource), the shared lines form a pool. Its chargeable quantity (each
line quantized to the record scale, then summed) and, when priced, its cost (the sum of the
lines' costs) are split over the recipients, the non-shared lines of the same group whose
chargeable quantity at record scale is positive, in proportion to that quantity. The split is
exact at the record scale (`exporter.money.largest_remainder`): each share is floored to the
scale, and the units left over go one by one to the largest remainders (ties: the recipient's
namespace, kind and name, ascending), so Σ shares == pool total to the last decimal.

Output, for each pool with recipients:
- one line per recipient, `allocation="shared-distribution"`, `method="shared-proportional/v1"`,
  the recipient's workload and org assignment, usage and request 0 (they stay with the source
  so efficiency ratios are not distorted), chargeable and cost the share, unit price None (the
  cost is a share of the pool's cost, not quantity × price), and the label `x_shared_from`
  listing the pool's source workloads as `namespace/kind/name`, comma-separated;
- the shared lines themselves, unchanged except `allocation="shared-source"`.

A pool without recipients (no non-shared line, or all with zero quantity) stays with its own
lines: they remain `allocation="direct"` and no distribution line is emitted.

Avoiding double counting: totals per org are the sum of `direct` and `shared-distribution`
lines; `shared-source` lines are for audit (what the pool was made of) and must be left out.
With that rule the per-group totals equal the totals without sharing, exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar, cast

from exporter.config import SharedCostsConfig
from exporter.model import ORG_KEYS, ChargeLine, PricedLine, Resource, WorkloadKey
from exporter.money import largest_remainder
from exporter.periods import Period
from exporter.pricing import COST_SCALE, QUANTITY_SCALE, quantize_cost, quantize_quantity

METHOD_ID = "shared-proportional/v1"
DIRECT = "direct"
SHARED_SOURCE = "shared-source"
SHARED_DISTRIBUTION = "shared-distribution"
SHARED_FROM_LABEL = "x_shared_from"

L = TypeVar("L", ChargeLine, PricedLine)


@dataclass(frozen=True, slots=True)
class SharedPool:
    """One (period, cluster, resource) pool: what was shared and how many recipients got it.

    `quantity` is Σ of the sources' chargeable at record scale, `cost` Σ of their costs (None
    when unpriced). `recipients == 0` means the pool stayed with its own lines.
    """

    period: Period
    cluster: str
    resource: Resource
    sources: tuple[WorkloadKey, ...]
    quantity: Decimal
    cost: Decimal | None
    recipients: int


@dataclass(frozen=True, slots=True)
class SharedResult(Generic[L]):
    """Every input line (shared ones re-marked when distributed), then the distribution lines."""

    lines: tuple[L, ...]
    pools: tuple[SharedPool, ...]


def is_shared(line: ChargeLine, config: SharedCostsConfig) -> bool:
    """Whether `line` belongs to a shared workload under `config` (ignores `enabled`)."""
    if line.workload.namespace in config.namespaces:
        return True
    return any(_matches(sel, line) for sel in config.selectors)


def _matches(selector: Mapping[str, str], line: ChargeLine) -> bool:
    for key, value in selector.items():
        actual = line.org.values.get(key) if key in ORG_KEYS else line.labels.get(key)
        if actual != value:
            return False
    return True


def distribute(lines: Sequence[L], config: SharedCostsConfig) -> SharedResult[L]:
    """Distribute the shared lines' quantity (and cost) over the other lines (module docstring).

    Accepts charge lines or priced lines (not mixed) with `allocation="direct"`; returns the same
    kind. With `config.enabled` false the lines come back unchanged. Pure: no I/O.
    """
    if not config.enabled or not lines:
        return SharedResult(tuple(lines), ())
    priced = isinstance(lines[0], PricedLine)
    items: list[PricedLine] = []
    for ln in lines:
        if isinstance(ln, PricedLine) != priced:
            raise TypeError("distribute: lines must be all ChargeLine or all PricedLine")
        p = ln if isinstance(ln, PricedLine) else PricedLine(ln, None, None, None, None)
        if p.line.allocation != DIRECT:
            raise ValueError(f"distribute: expected direct lines, got {p.line.allocation!r}")
        items.append(p)

    groups: dict[tuple[Period, str, Resource], list[int]] = {}
    for i, p in enumerate(items):
        key = (p.line.period, p.line.workload.cluster, p.line.resource)
        groups.setdefault(key, []).append(i)

    out = list(items)
    extra: list[PricedLine] = []
    pools: list[SharedPool] = []
    for (period, cluster, resource), idx in sorted(groups.items(), key=lambda kv: kv[0]):
        sources = [i for i in idx if is_shared(items[i].line, config)]
        if not sources:
            continue
        shared = set(sources)
        quantity = sum((quantize_quantity(items[i].line.chargeable) for i in sources), Decimal(0))
        costs = [items[i].cost for i in sources]
        cost = None if any(c is None for c in costs) else sum(
            (quantize_cost(cast(Decimal, c)) for c in costs), Decimal(0)
        )
        recipients = sorted(
            (i for i in idx if i not in shared
             and quantize_quantity(items[i].line.chargeable) > 0),
            key=lambda i: _order(items[i].line.workload),
        )
        src_keys = tuple(sorted(items[i].line.workload for i in sources))
        pools.append(SharedPool(period, cluster, resource, src_keys, quantity, cost, len(recipients)))
        if not recipients:
            continue  # stays with its own lines, which remain direct
        for i in sources:
            out[i] = _mark(items[i])
        weights = [quantize_quantity(items[i].line.chargeable) for i in recipients]
        q_shares = largest_remainder(quantity, weights, QUANTITY_SCALE)
        c_shares = (
            largest_remainder(cost, weights, COST_SCALE) if cost is not None
            else [None] * len(recipients)
        )
        template = items[sources[0]]
        shared_from = ",".join(dict.fromkeys(_order_text(k) for k in src_keys))
        for i, q, c in zip(recipients, q_shares, c_shares, strict=True):
            if q == 0 and not c:
                continue
            extra.append(_distribution(items[i].line, q, c, template, shared_from))

    result = out + extra
    if priced:
        return cast(SharedResult[L], SharedResult(tuple(result), tuple(pools)))
    return cast(SharedResult[L], SharedResult(tuple(p.line for p in result), tuple(pools)))


def _order(w: WorkloadKey) -> tuple[str, str, str]:
    return (w.namespace, w.kind, w.name)


def _order_text(w: WorkloadKey) -> str:
    return f"{w.namespace}/{w.kind}/{w.name}"


def _mark(p: PricedLine) -> PricedLine:
    return dataclasses.replace(p, line=dataclasses.replace(p.line, allocation=SHARED_SOURCE))


def _distribution(
    recipient: ChargeLine, quantity: Decimal, cost: Decimal | None, template: PricedLine,
    shared_from: str,
) -> PricedLine:
    line = dataclasses.replace(
        recipient,
        usage=Decimal(0),
        request=Decimal(0),
        chargeable=quantity,
        labels={**recipient.labels, SHARED_FROM_LABEL: shared_from},
        method=METHOD_ID,
        allocation=SHARED_DISTRIBUTION,
    )
    if cost is None:
        return PricedLine(line, None, None, None, None)
    return PricedLine(line, None, cost, template.currency, template.price_version)

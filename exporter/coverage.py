"""Label coverage: how much chargeable quantity the org labels fail to place, per cluster.

For each cluster, org key and resource, `unallocated_share` is the chargeable quantity whose
value for that key is `__unallocated__`, divided by the cluster's chargeable quantity of that
resource; `invalid_share` the same for `__invalid__`. Sums are exact over the lines' unrounded
quantities; the share is quantized to 6 decimals with ROUND_HALF_EVEN, and is 0 when the total
is 0. Shared-cost distribution lines are left out (they re-state quantity already counted on the
workloads that used it), so coverage is the same with and without shared costs; so are idle
capacity lines (`__idle__`, exporter/idle.py), which are no workload's.

Top offenders: per resource, the `top_n` workloads with the most chargeable quantity that have at
least one key unallocated or invalid (ties: namespace, kind, name ascending). Lines of several
periods are summed per workload.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich.console import Group
from rich.table import Table

from exporter.model import (
    INVALID,
    ORG_KEYS,
    RESOURCES,
    UNALLOCATED,
    ChargeLine,
    KeyCoverage,
    LabelCoverage,
    Offender,
    OrgAssignment,
    Resource,
    resource_order,
    unit_of,
)
from exporter.money import SHARE, DecimalSpec, quantize, share
from exporter.pricing import quantize_quantity
from exporter.records import kubernetes_kind

_DISTRIBUTION = "shared-distribution"
# Lines that are no workload's own charge: shared-cost shares and idle capacity (exporter.idle).
_NOT_WORKLOADS = frozenset({_DISTRIBUTION, "idle", "idle-source", "idle-distribution"})
_ZERO = Decimal(0)
# Display only: percentages at 4 decimals, offenders' quantities at the share scale.
_PERCENT = DecimalSpec(SHARE.precision + 2, 4)
_DISPLAY = DecimalSpec(40, SHARE.scale)


@dataclass(frozen=True, slots=True)
class _Gaps:
    """The org keys one assignment leaves unallocated or invalid (in `ORG_KEYS` order)."""

    pairs: tuple[tuple[str, str], ...]  # (key, UNALLOCATED or INVALID)
    bad: frozenset[str]
    invalid: frozenset[str]


_NO_GAPS = _Gaps((), frozenset(), frozenset())


def _gaps(org: OrgAssignment) -> _Gaps:
    values = org.values
    pairs: list[tuple[str, str]] = []
    for key in ORG_KEYS:
        value = values.get(key, UNALLOCATED)
        if value in (UNALLOCATED, INVALID):
            pairs.append((key, value))
    if not pairs:
        return _NO_GAPS  # the common case: every key placed
    return _Gaps(
        pairs=tuple(pairs),
        bad=frozenset(key for key, _ in pairs),
        invalid=frozenset(key for key, value in pairs if value == INVALID),
    )


# (namespace, kind, name) -> (chargeable, keys missing, keys invalid), per cluster and resource
_Offenders = dict[tuple[str, str, str], tuple[Decimal, frozenset[str], frozenset[str]]]


@dataclass(slots=True)
class _ClusterSums:
    """One cluster's running sums, per resource."""

    totals: dict[Resource, Decimal]
    missing: dict[Resource, dict[tuple[str, str], Decimal]]  # (key, value) -> chargeable
    offenders: dict[Resource, _Offenders]


def label_coverage(lines: Sequence[ChargeLine], top_n: int = 10) -> dict[str, LabelCoverage]:
    """Coverage per cluster (clusters in name order); see the module docstring.

    Sums are taken in line order in the caller's decimal context, so the result does not
    depend on how lines share their `OrgAssignment` objects.
    """
    if top_n < 0:
        raise ValueError("top_n must not be negative")
    clusters: dict[str, _ClusterSums] = {}
    # Lines share assignments (see `OrgModel.resolve`): classify each object once. The lines
    # keep every assignment alive for this call, so an id is never reused meanwhile.
    gaps_of: dict[int, _Gaps] = {}
    for ln in lines:
        if ln.allocation in _NOT_WORKLOADS:
            continue
        sums = clusters.get(ln.workload.cluster)
        if sums is None:
            sums = clusters[ln.workload.cluster] = _ClusterSums(
                totals={r: Decimal(0) for r in RESOURCES},
                missing={r: {} for r in RESOURCES},
                offenders={r: {} for r in RESOURCES},
            )
        res = ln.resource
        chargeable = ln.chargeable
        sums.totals[res] = sums.totals.get(res, _ZERO) + chargeable
        gaps = gaps_of.get(id(ln.org))
        if gaps is None:
            gaps = gaps_of[id(ln.org)] = _gaps(ln.org)
        if not gaps.pairs:
            continue
        missing = sums.missing.get(res)
        if missing is None:
            missing = sums.missing[res] = {}
        for pair in gaps.pairs:
            missing[pair] = missing.get(pair, _ZERO) + chargeable
        offenders = sums.offenders.get(res)
        if offenders is None:
            offenders = sums.offenders[res] = {}
        w = ln.workload
        ok = (w.namespace, w.kind, w.name)
        seen = offenders.get(ok)
        if seen is None:
            offenders[ok] = (_ZERO + chargeable, gaps.bad, gaps.invalid)
        else:
            offenders[ok] = (seen[0] + chargeable, seen[1] | gaps.bad, seen[2] | gaps.invalid)

    out: dict[str, LabelCoverage] = {}
    for cluster in sorted(clusters):
        sums = clusters[cluster]
        # cpu and memory always (0 shares without lines), then every other resource the
        # cluster has lines of: GPUs, then storage classes (`model.resource_order`).
        present = _resources(sums.totals)
        keys = tuple(
            KeyCoverage(
                org_key=key,
                resource=res,
                unallocated_share=share(
                    sums.missing.get(res, {}).get((key, UNALLOCATED), _ZERO), sums.totals[res]
                ),
                invalid_share=share(sums.missing.get(res, {}).get((key, INVALID), _ZERO),
                                    sums.totals[res]),
            )
            for key in ORG_KEYS
            for res in present
        )
        top: list[Offender] = []
        for res in present:
            # nsmallest(n, ...) is sorted(...)[:n], without sorting every offender.
            ranked = heapq.nsmallest(
                top_n,
                ((k, v) for k, v in sums.offenders.get(res, {}).items() if v[0] > 0),
                key=lambda kv: (-kv[1][0], kv[0][0], kv[0][1], kv[0][2]),
            )
            for (ns, kind, name), (q, bad, inv) in ranked:
                top.append(Offender(
                    namespace=ns, workload_kind=kind, workload_name=name, resource=res,
                    chargeable=q,
                    missing_keys=tuple(k for k in ORG_KEYS if k in bad),
                    invalid_keys=tuple(k for k in ORG_KEYS if k in inv),
                ))
        out[cluster] = LabelCoverage(cluster=cluster, keys=keys, top_offenders=tuple(top))
    return out


def _resources(seen: Mapping[Resource, Decimal] | Sequence[Resource]) -> tuple[Resource, ...]:
    """`RESOURCES`, then the other resources of `seen` in `model.resource_order`."""
    return (*RESOURCES, *sorted((r for r in seen if r not in RESOURCES), key=resource_order))


def _pct(value: Decimal) -> str:
    return f"{quantize(value * 100, _PERCENT, 'percentage')} %"


def render_coverage_table(coverage: Mapping[str, LabelCoverage]) -> Table:
    """One row per cluster and org key: the unallocated and invalid share of each resource."""
    table = Table(title="Label coverage (share of chargeable quantity)")
    table.add_column("Cluster")
    table.add_column("Org key")
    present = _resources(list(dict.fromkeys(k.resource for c in coverage.values()
                                           for k in c.keys)))
    for res in present:
        table.add_column(f"{res} unallocated", justify="right")
        table.add_column(f"{res} invalid", justify="right")
    for cluster, cov in sorted(coverage.items()):
        by = {(k.org_key, k.resource): k for k in cov.keys}
        for key in ORG_KEYS:
            cells: list[str] = []
            for res in present:
                kc = by.get((key, res))
                for value in (
                    (kc.unallocated_share, kc.invalid_share) if kc else (Decimal(0), Decimal(0))
                ):
                    text = _pct(value)
                    cells.append(f"[yellow]{text}[/yellow]" if value > 0 else text)
            table.add_row(cluster, key, *cells)
    return table


def render_offenders_table(coverage: Mapping[str, LabelCoverage]) -> Table:
    """The top offending workloads of every cluster, largest first per resource."""
    table = Table(title="Top workloads without valid org labels")
    for name in ("Cluster", "Namespace", "Kind", "Workload", "Resource"):
        table.add_column(name)
    table.add_column("Chargeable", justify="right")
    for name in ("Unit", "Unallocated keys", "Invalid keys"):
        table.add_column(name)
    for cluster, cov in sorted(coverage.items()):
        for o in cov.top_offenders:
            unallocated = [k for k in o.missing_keys if k not in o.invalid_keys]
            table.add_row(
                cluster, o.namespace, kubernetes_kind(o.workload_kind), o.workload_name, o.resource,
                str(quantize(o.chargeable, _DISPLAY, "chargeable quantity")),
                unit_of(o.resource), ", ".join(unallocated), ", ".join(o.invalid_keys),
            )
    return table


def render_coverage(coverage: Mapping[str, LabelCoverage]) -> Group:
    """Both tables, for `chargeback-exporter report --coverage`."""
    return Group(render_coverage_table(coverage), render_offenders_table(coverage))


def coverage_document(coverage: Mapping[str, LabelCoverage]) -> list[dict[str, Any]]:
    """What both tables show, as JSON-ready data (`report --coverage --format json`).

    One entry per cluster (name order) with its shares and top offenders, shaped as the period
    manifest carries them: shares at 6 decimals, an offender's chargeable quantity at the
    records' scale, kinds spelled as records spell them; decimals as exact strings.
    """
    return [
        {
            "cluster": cluster,
            "keys": [
                {"org_key": k.org_key, "resource": k.resource,
                 "unallocated_share": format(k.unallocated_share, "f"),
                 "invalid_share": format(k.invalid_share, "f")}
                for k in cov.keys
            ],
            "top_offenders": [
                {"namespace": o.namespace, "workload_kind": kubernetes_kind(o.workload_kind),
                 "workload": o.workload_name, "resource": o.resource,
                 "chargeable_quantity": format(quantize_quantity(o.chargeable), "f"),
                 "unit": unit_of(o.resource), "missing_keys": list(o.missing_keys),
                 "invalid_keys": list(o.invalid_keys)}
                for o in cov.top_offenders
            ],
        }
        for cluster, cov in sorted(coverage.items())
    ]

"""Label coverage: how much chargeable quantity the org labels fail to place, per cluster.

For each cluster, org key and resource, `unallocated_share` is the chargeable quantity whose
value for that key is `__unallocated__`, divided by the cluster's chargeable quantity of that
resource; `invalid_share` the same for `__invalid__`. Sums are exact over the lines' unrounded
quantities; the share is quantized to 6 decimals with ROUND_HALF_EVEN, and is 0 when the total
is 0. Shared-cost distribution lines are left out (they re-state quantity already counted on the
workloads that used it), so coverage is the same with and without shared costs.

Top offenders: per resource, the `top_n` workloads with the most chargeable quantity that have at
least one key unallocated or invalid (ties: namespace, kind, name ascending). Lines of several
periods are summed per workload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from rich.console import Group
from rich.table import Table

from exporter.model import (
    INVALID,
    ORG_KEYS,
    RESOURCES,
    UNALLOCATED,
    UNITS,
    ChargeLine,
    KeyCoverage,
    LabelCoverage,
    Offender,
    Resource,
)

SHARE_QUANTUM = Decimal("0.000001")
_DISTRIBUTION = "shared-distribution"


def share(part: Decimal, total: Decimal) -> Decimal:
    """`part / total` quantized to 6 decimals (ROUND_HALF_EVEN); 0 when `total` is 0."""
    if total == 0:
        return Decimal(0).quantize(SHARE_QUANTUM)
    with localcontext() as ctx:
        ctx.prec = 60
        return (part / total).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_EVEN)


def label_coverage(lines: Sequence[ChargeLine], top_n: int = 10) -> dict[str, LabelCoverage]:
    """Coverage per cluster (clusters in name order); see the module docstring."""
    if top_n < 0:
        raise ValueError("top_n must not be negative")
    totals: dict[str, dict[Resource, Decimal]] = {}
    missing: dict[tuple[str, str, str, Resource], Decimal] = {}
    # (cluster, namespace, kind, name, resource) -> [chargeable, missing keys, invalid keys]
    offenders: dict[tuple[str, str, str, str, Resource], tuple[Decimal, set[str], set[str]]] = {}
    for ln in lines:
        if ln.allocation == _DISTRIBUTION:
            continue
        cluster = ln.workload.cluster
        per_res = totals.setdefault(cluster, {r: Decimal(0) for r in RESOURCES})
        per_res[ln.resource] = per_res.get(ln.resource, Decimal(0)) + ln.chargeable
        bad: set[str] = set()
        invalid: set[str] = set()
        for key in ORG_KEYS:
            value = ln.org.values.get(key, UNALLOCATED)
            if value in (UNALLOCATED, INVALID):
                k = (cluster, key, value, ln.resource)
                missing[k] = missing.get(k, Decimal(0)) + ln.chargeable
                bad.add(key)
                if value == INVALID:
                    invalid.add(key)
        if bad:
            w = ln.workload
            ok = (cluster, w.namespace, w.kind, w.name, ln.resource)
            q, b, inv = offenders.get(ok, (Decimal(0), set(), set()))
            offenders[ok] = (q + ln.chargeable, b | bad, inv | invalid)

    out: dict[str, LabelCoverage] = {}
    for cluster in sorted(totals):
        keys = tuple(
            KeyCoverage(
                org_key=key,
                resource=res,
                unallocated_share=share(
                    missing.get((cluster, key, UNALLOCATED, res), Decimal(0)), totals[cluster][res]
                ),
                invalid_share=share(
                    missing.get((cluster, key, INVALID, res), Decimal(0)), totals[cluster][res]
                ),
            )
            for key in ORG_KEYS
            for res in RESOURCES
        )
        top: list[Offender] = []
        for res in RESOURCES:
            ranked = sorted(
                (
                    (k, v) for k, v in offenders.items()
                    if k[0] == cluster and k[4] == res and v[0] > 0
                ),
                key=lambda kv: (-kv[1][0], kv[0][1], kv[0][2], kv[0][3]),
            )
            for (_, ns, kind, name, _), (q, bad, inv) in ranked[:top_n]:
                top.append(Offender(
                    namespace=ns, workload_kind=kind, workload_name=name, resource=res,
                    chargeable=q,
                    missing_keys=tuple(k for k in ORG_KEYS if k in bad),
                    invalid_keys=tuple(k for k in ORG_KEYS if k in inv),
                ))
        out[cluster] = LabelCoverage(cluster=cluster, keys=keys, top_offenders=tuple(top))
    return out


def _pct(value: Decimal) -> str:
    return f"{(value * 100).quantize(Decimal('0.0001'))} %"


def render_coverage_table(coverage: Mapping[str, LabelCoverage]) -> Table:
    """One row per cluster and org key: the unallocated and invalid share of each resource."""
    table = Table(title="Label coverage (share of chargeable quantity)")
    table.add_column("Cluster")
    table.add_column("Org key")
    for res in RESOURCES:
        table.add_column(f"{res} unallocated", justify="right")
        table.add_column(f"{res} invalid", justify="right")
    for cluster, cov in sorted(coverage.items()):
        by = {(k.org_key, k.resource): k for k in cov.keys}
        for key in ORG_KEYS:
            cells: list[str] = []
            for res in RESOURCES:
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
                cluster, o.namespace, o.workload_kind, o.workload_name, o.resource,
                str(o.chargeable.quantize(SHARE_QUANTUM, rounding=ROUND_HALF_EVEN)),
                UNITS[o.resource], ", ".join(unallocated), ", ".join(o.invalid_keys),
            )
    return table


def render_coverage(coverage: Mapping[str, LabelCoverage]) -> Group:
    """Both tables, for `chargeback-exporter report --coverage`."""
    return Group(render_coverage_table(coverage), render_offenders_table(coverage))

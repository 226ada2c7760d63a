"""Period manifests: one per (period, cluster), built from the cluster's billing records.

A manifest says how many records a period-cluster has, their exact totals per resource, the
label coverage, the nodes' capacity (idle) and the SHA-256 of the records' Avro bodies in
`record_id` order (`content_hash`), so a consumer can tell a complete period from a partial one
(schemas/README.md, consumer rules). The dataclasses are in `exporter.records`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from exporter.avro import AvroSchema, load_schema, nested_decimal_specs
from exporter.errors import EncodingError
from exporter.model import RESOURCES, LabelCoverage, unit_of
from exporter.money import DecimalSpec, quantize
from exporter.periods import Period
from exporter.records import (
    BILLABLE_ALLOCATIONS,
    STATUSES,
    BillingRecord,
    KeyShare,
    PeriodManifest,
    ResourceCapacity,
    ResourceTotal,
    Revision,
    TopOffender,
    kubernetes_kind,
    manifest_id,
    revision_of,
)

if TYPE_CHECKING:
    from exporter.idle import Capacity




def content_hash_of_bodies(bodies: Iterable[bytes]) -> str:
    """SHA-256 hex over each Avro body as 8-byte big-endian length + bytes, in the given order
    (record_id order for a manifest). Consumers recompute it from the framed values with
    `exporter.avro.body_of`.
    """
    h = hashlib.sha256()
    for body in bodies:
        h.update(len(body).to_bytes(8, "big"))
        h.update(body)
    return h.hexdigest()


def content_hash(records: Iterable[BillingRecord], schema: AvroSchema | None = None) -> str:
    """The manifest `content_hash` of a period-cluster's records (any order given)."""
    s = schema or load_schema("billing_record")
    ordered = sorted(records, key=lambda r: r.record_id)
    encode = s.encoder()
    return content_hash_of_bodies(encode(r) for r in ordered)


def coverage_status(coverage: Decimal, minimum: Decimal) -> str:
    """`final` when `coverage >= minimum`, else `low-coverage`."""
    return "final" if coverage >= minimum else "low-coverage"


_RESOURCE_RANK: Mapping[str, int] = {r: i for i, r in enumerate(RESOURCES)}


def _resource_order(resource: str) -> tuple[int, str]:
    return (_RESOURCE_RANK.get(resource, len(_RESOURCE_RANK)), resource)


def build_manifests(records: Sequence[BillingRecord],
                    coverage_by_cluster: Mapping[str, LabelCoverage],
                    sample_coverage: Mapping[str, Decimal], *, period: Period, method: str,
                    revision: Revision, generated_at_ms: int, exporter_version: str,
                    status: str | Callable[[str], str] = "final",
                    bodies: Mapping[str, bytes] | None = None,
                    capacity: Mapping[str, Sequence[Capacity]] | None = None,
                    ) -> list[PeriodManifest]:
    """One manifest per cluster of the period, sorted by cluster.

    Clusters are those in `records`, `coverage_by_cluster` and `sample_coverage` (a cluster
    with no workloads still gets a manifest with `record_count` 0). Totals are exact sums at
    the records' scale; `content_hash` covers the records' Avro bodies in `record_id` order.
    Label coverage comes from `coverage_by_cluster` (see `exporter.coverage.label_coverage`);
    a cluster without records may be missing there. `status` is a value of `STATUSES` or a
    function of the cluster. `bodies` (record_id -> Avro body under the current schema) spares
    encoding the records again when the caller already did. `capacity` (cluster -> its
    `exporter.idle.Capacity` per resource) fills `capacity` when idle capacity is measured.

    Raises `EncodingError` for a record of another period, a total that does not fit its
    schema, mixed currencies or a mix of priced and unpriced records within a resource, a
    cluster without sample coverage, or an unknown status.
    """
    schema = load_schema("period_manifest")
    encode_body = load_schema("billing_record").encoder()
    total_specs = nested_decimal_specs(schema, "totals")
    share_specs = nested_decimal_specs(schema, "unallocated_share")
    capacity_specs = nested_decimal_specs(schema, "capacity")
    offender_specs = nested_decimal_specs(schema, "top_offenders")
    by_cluster: dict[str, list[BillingRecord]] = {}
    for r in records:
        if r.period_start != period.start * 1000 or r.period_end != period.end * 1000:
            raise EncodingError(f"record {r.record_id}: period {r.period} is not {period}")
        by_cluster.setdefault(r.cluster, []).append(r)
    clusters = sorted(set(by_cluster) | set(coverage_by_cluster) | set(sample_coverage))
    out: list[PeriodManifest] = []
    for cluster in clusters:
        recs = sorted(by_cluster.get(cluster, ()), key=lambda r: r.record_id)
        mid = manifest_id(cluster=cluster, period=period)
        where = f"manifest {mid} ({cluster} {period})"
        totals = tuple(_totals(recs, resource, total_specs, where)
                       for resource in sorted({r.resource for r in recs}, key=_resource_order))
        cov = coverage_by_cluster.get(cluster)
        if cov is None:
            if recs:
                raise EncodingError(f"{where}: no label coverage for a cluster with records")
            cov = LabelCoverage(cluster, (), ())
        shares = tuple(
            KeyShare(k.org_key, k.resource,
                     quantize(k.unallocated_share, share_specs["unallocated_share"],
                              f"{where} unallocated_share {k.org_key}/{k.resource}"),
                     quantize(k.invalid_share, share_specs["invalid_share"],
                              f"{where} invalid_share {k.org_key}/{k.resource}"))
            for k in cov.keys
        )
        offenders = tuple(
            TopOffender(o.namespace, kubernetes_kind(o.workload_kind), o.workload_name, o.resource,
                        quantize(o.chargeable, offender_specs["chargeable_quantity"],
                                 f"{where} top_offenders {o.namespace}/{o.workload_name}"),
                        tuple(o.missing_keys))
            for o in cov.top_offenders
        )
        raw_cov = sample_coverage.get(cluster)
        if raw_cov is None:
            if not recs:
                raise EncodingError(f"{where}: no sample coverage for cluster {cluster!r}")
            raw_cov = min(r.sample_coverage for r in recs)
        state = status(cluster) if callable(status) else status
        if state not in STATUSES:
            raise EncodingError(f"{where}: unknown status {state!r}; expected one of {STATUSES}")
        out.append(PeriodManifest(
            manifest_id=mid,
            period_start=period.start * 1000,
            period_end=period.end * 1000,
            cluster=cluster,
            record_count=len(recs),
            totals=totals,
            unallocated_share=shares,
            top_offenders=offenders,
            revision=revision_of(revision, mid),
            content_hash=content_hash_of_bodies(
                (bodies.get(r.record_id) if bodies else None) or encode_body(r)
                for r in recs),
            sample_coverage=quantize(raw_cov, schema.decimals["sample_coverage"],
                                     f"{where} sample_coverage"),
            method=method,
            status=state,
            complete=state == "final",
            exporter_version=exporter_version,
            generated_at=generated_at_ms,
            capacity=tuple(
                ResourceCapacity(c.resource, unit_of(c.resource), *(
                    quantize(v, capacity_specs[name], f"{where} capacity {c.resource} {name}")
                    for name, v in (("allocatable_quantity", c.allocatable),
                                    ("charged_quantity", c.charged),
                                    ("idle_quantity", c.idle),
                                    ("overcommit_quantity", c.overcommit))))
                for c in sorted((capacity or {}).get(cluster, ()),
                                key=lambda c: _resource_order(c.resource))),
        ))
    return out


def _totals(recs: Sequence[BillingRecord], resource: str, specs: Mapping[str, DecimalSpec],
            where: str) -> ResourceTotal:
    rows = [r for r in recs if r.resource == resource and r.allocation in BILLABLE_ALLOCATIONS]
    sums = {
        name: quantize(sum((getattr(r, name) for r in rows), Decimal(0)), specs[name],
                       f"{where} total {resource} {name}")
        for name in ("usage_quantity", "request_quantity", "chargeable_quantity")
    }
    priced = [r for r in rows if r.cost is not None]
    currencies = {r.currency for r in priced}
    cost: Decimal | None = None
    currency: str | None = None
    if priced:
        if len(priced) != len(rows):
            raise EncodingError(f"{where}: {resource} mixes priced and unpriced records")
        if len(currencies) != 1:
            raise EncodingError(f"{where}: {resource} mixes currencies {sorted(map(str, currencies))}")
        currency = currencies.pop()
        cost = quantize(sum((r.cost for r in priced if r.cost is not None), Decimal(0)),
                        specs["cost"], f"{where} total {resource} cost")
    units = {r.unit for r in rows}
    if len(units) != 1:
        raise EncodingError(f"{where}: {resource} mixes units {sorted(units)}")
    return ResourceTotal(resource, units.pop(), sums["usage_quantity"], sums["request_quantity"],
                         sums["chargeable_quantity"], cost, currency)

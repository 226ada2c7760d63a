"""Domain types shared along the data flow: source -> units -> pricing -> records.

Quantities are `Decimal`, never float. A `ChargeLine` is one (period, workload, resource) and is
what pricing and records consume; `WorkloadUsage` is what a source returns before units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from exporter.periods import Period

Resource = Literal["cpu", "memory"]
RESOURCES: tuple[Resource, ...] = ("cpu", "memory")
UNITS: Mapping[Resource, str] = {"cpu": "Core-Hours", "memory": "GiB-Hours"}
ORG_KEYS: tuple[str, ...] = ("costcenter", "businessunit", "department", "team")
UNALLOCATED = "__unallocated__"
INVALID = "__invalid__"
GIB = 2**30


@dataclass(frozen=True, slots=True, order=True)
class WorkloadKey:
    """The record grain: one workload in one namespace of one cluster."""

    cluster: str
    namespace: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class SampleSums:
    """Usage, request and chargeable quantities of one resource.

    From a source (`PeriodUsage`): sums over sample steps of the per-step quantity (cores or
    bytes); `units.unit_hours` turns them into unit-hours (× step / 3600, bytes / 2^30). From the
    simulator's `ground_truth`: already in unit-hours.
    """

    usage: Decimal
    request: Decimal
    chargeable: Decimal


@dataclass(frozen=True, slots=True)
class WorkloadUsage:
    """What the source measured for one workload in one period."""

    key: WorkloadKey
    labels: Mapping[str, str]
    sums: Mapping[Resource, SampleSums]


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """Everything the source returned for one period, or for one chunk of it.

    `clusters` are the clusters it covers: the source answered every query for them, so a
    cluster of `clusters` without workloads showed none. A source's chunks of one period cover
    disjoint clusters, and between them every cluster the source knows to be expected.
    """

    period: Period
    step_seconds: int
    grain: str
    workloads: tuple[WorkloadUsage, ...]
    coverage: Mapping[str, Decimal]  # cluster -> share of expected sample steps present
    # Clusters with any usage series / any request series in the period: what the source saw,
    # so that a cluster missing one of them (or everything) is told from one with no usage.
    usage_clusters: frozenset[str] = frozenset()
    request_clusters: frozenset[str] = frozenset()
    queries: int = 0
    bytes_fetched: int = 0
    clusters: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class OrgAssignment:
    """Resolved org labels and where each came from (`workload`, `namespace`, `default`, ...)."""

    values: Mapping[str, str]
    sources: Mapping[str, str]
    original: Mapping[str, str] = field(default_factory=dict)  # raw value kept when `__invalid__`


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One (period, workload, resource) in unit-hours, exact, not yet quantized or priced."""

    period: Period
    workload: WorkloadKey
    resource: Resource
    usage: Decimal
    request: Decimal
    chargeable: Decimal
    org: OrgAssignment
    labels: Mapping[str, str]
    coverage: Decimal
    method: str
    allocation: str = "direct"  # or "shared-distribution"

    @property
    def unit(self) -> str:
        return UNITS[self.resource]


@dataclass(frozen=True, slots=True)
class PricedLine:
    """A charge line with its price applied (price fields are None when no rate card is set)."""

    line: ChargeLine
    unit_price: Decimal | None
    cost: Decimal | None
    currency: str | None
    price_version: str | None = None


@dataclass(frozen=True, slots=True)
class KeyCoverage:
    """Share of one resource's chargeable quantity whose org key is unallocated or invalid."""

    org_key: str
    resource: Resource
    unallocated_share: Decimal
    invalid_share: Decimal


@dataclass(frozen=True, slots=True)
class Offender:
    """A workload that lacks (or has invalid) org labels, ranked by chargeable quantity."""

    namespace: str
    workload_kind: str
    workload_name: str
    resource: Resource
    chargeable: Decimal
    missing_keys: tuple[str, ...]  # keys unallocated or invalid
    invalid_keys: tuple[str, ...] = ()  # the subset of missing_keys that is invalid


@dataclass(frozen=True, slots=True)
class LabelCoverage:
    """Label coverage of one (period, cluster)."""

    cluster: str
    keys: tuple[KeyCoverage, ...]
    top_offenders: tuple[Offender, ...]

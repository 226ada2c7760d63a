"""Domain types shared along the data flow: source -> units -> pricing -> records.

Quantities are `Decimal`, never float. A `ChargeLine` is one (period, workload, resource) and is
what pricing and records consume; `WorkloadUsage` is what a source returns before units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from operator import attrgetter
from typing import NamedTuple

from exporter.periods import Period

Resource = str
"""A charged resource: `cpu`, `memory`, `gpu` or `gpu.<profile>` (GPUs and their MIG or
time-sliced slices, by config), or `storage.<storage class>` (PVC capacity)."""
RESOURCES: tuple[Resource, ...] = ("cpu", "memory")  # measured by usage and request
UNITS: Mapping[Resource, str] = {"cpu": "Core-Hours", "memory": "GiB-Hours"}
GPU = "gpu"
STORAGE = "storage"
GPU_UNIT = "GPU-Hours"
ORG_KEYS: tuple[str, ...] = ("costcenter", "businessunit", "department", "team")
UNALLOCATED = "__unallocated__"
INVALID = "__invalid__"
GIB = 2**30


_RESOURCE = re.compile(r"(cpu|memory|gpu|gpu\.[a-z0-9]([a-z0-9.\-]*[a-z0-9])?"
                       r"|storage\.([a-z0-9]([a-z0-9.\-]*[a-z0-9])?|<none>))")


def is_resource(name: str) -> bool:
    """True for a name `Resource` allows (storage classes are DNS subdomain names, or
    kube-state-metrics' `<none>` for a claim without one)."""
    return _RESOURCE.fullmatch(name) is not None


def family(resource: Resource) -> str:
    """`cpu`, `memory`, `gpu` or `storage`: what a resource is, whatever its profile or class."""
    return resource.split(".", 1)[0]


def unit_of(resource: Resource) -> str:
    """The FOCUS unit of a resource's quantities; KeyError for a name `is_resource` refuses."""
    unit = UNITS.get(resource)
    if unit is not None:
        return unit
    if not is_resource(resource):
        raise KeyError(resource)
    return GPU_UNIT if family(resource) == GPU else "GiB-Hours"


def resource_order(resource: Resource) -> tuple[int, str]:
    """Records and reports list cpu, memory, then GPUs, then storage, each by name."""
    rank = {"cpu": 0, "memory": 1, GPU: 2, STORAGE: 3}.get(family(resource), 4)
    return rank, resource


class WorkloadKey(NamedTuple):
    """The record grain: one workload in one namespace of one cluster.

    A named tuple: equal to and ordered as the tuple of its fields, and, holding only strings,
    untracked by the cyclic collector after one pass (as `SampleSums`).
    """

    cluster: str
    namespace: str
    kind: str
    name: str


class SampleSums(NamedTuple):
    """Usage, request and chargeable quantities of one resource.

    A named tuple: it holds only decimals, so the cyclic collector stops tracking it after one
    pass; a period has one per workload and resource.

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
    # cluster -> resource -> Σ over steps of the nodes' allocatable (cores or bytes): present
    # only when idle capacity is measured (`idle.enabled`).
    allocatable: Mapping[str, Mapping[Resource, Decimal]] = field(default_factory=dict)
    clusters: frozenset[str] = frozenset()
    # Clusters with any claim capacity series in the period (claims are charged), so that a
    # cluster whose claims vanish is told from one whose claims were all deleted (completeness).
    claim_clusters: frozenset[str] = frozenset()


def merge_usage(chunks: Sequence[PeriodUsage]) -> PeriodUsage:
    """One `PeriodUsage` for the whole period from its chunks (disjoint clusters, in order),
    its workloads sorted by key."""
    first = chunks[0]
    coverage: dict[str, Decimal] = {}
    allocatable: dict[str, Mapping[Resource, Decimal]] = {}
    for c in chunks:
        coverage.update(c.coverage)
        allocatable.update(c.allocatable)
    workloads = [w for c in chunks for w in c.workloads]
    ends = [(c.workloads[0].key, c.workloads[-1].key) for c in chunks if c.workloads]
    if any(a[1] > b[0] for a, b in pairwise(ends)):
        # Groups made after a pre-count (new clusters) may interleave with the planned ones.
        workloads.sort(key=attrgetter("key"))
    return PeriodUsage(
        period=first.period, step_seconds=first.step_seconds, grain=first.grain,
        workloads=tuple(workloads), coverage=coverage,
        usage_clusters=frozenset().union(*(c.usage_clusters for c in chunks)),
        request_clusters=frozenset().union(*(c.request_clusters for c in chunks)),
        queries=sum(c.queries for c in chunks), bytes_fetched=sum(c.bytes_fetched for c in chunks),
        clusters=frozenset().union(*(c.clusters for c in chunks)), allocatable=allocatable,
        claim_clusters=frozenset().union(*(c.claim_clusters for c in chunks)),
    )


def covered_clusters(usage: PeriodUsage) -> frozenset[str]:
    """The clusters `usage` answers for: its `clusters`, and any it shows coverage or series of
    (a source that does not fill `clusters` covers what it returned)."""
    return usage.clusters.union(usage.coverage, usage.usage_clusters, usage.request_clusters)


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
        return unit_of(self.resource)


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

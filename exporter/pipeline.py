"""The one export path: measure a period, price it, build records, publish atomically.

Both the live worker and backfill call `Pipeline.compute` and `Pipeline.publish`, which is what
makes a backfill over unchanged data byte-identical to the live export; `report` measures with
`Pipeline.measure`, the first half of `compute`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from exporter import __version__
from exporter.clock import Clock
from exporter.completeness import check, empty_clusters, expected_clusters
from exporter.errors import IncompleteDataError
from exporter.idle import capacities, idle_lines
from exporter.idle import distribute as distribute_idle
from exporter.model import ChargeLine, LabelCoverage, PeriodUsage, PricedLine
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pricing import IdleRule
from exporter.sink import OutMessage, PeriodSink
from exporter.source import UsageSource
from exporter.units import method_id, unit_hours

if TYPE_CHECKING:
    # Only for typing: importing this module stays free of fastavro (`compute` imports it).
    from exporter.records import BillingRecord, PeriodManifest

log = logging.getLogger("exporter.pipeline")

Pricer = Callable[[Sequence[ChargeLine]], list[PricedLine]]
Distributor = Callable[[Sequence[PricedLine]], list[PricedLine]]
CoverageFn = Callable[[Sequence[ChargeLine]], Mapping[str, LabelCoverage]]


class Codec(Protocol):
    """Turns billing records, manifests and checkpoints into Kafka messages."""

    def records(self, records: Sequence[Any], headers: Sequence[tuple[str, bytes]],
                bodies: Mapping[str, bytes] | None = None) -> list[OutMessage]:
        """Encode records, keyed by `record_id`; `bodies` are Avro bodies already encoded
        under the current schema, by record_id, to be framed as they are."""
        ...

    def manifests(self, manifests: Sequence[Any], headers: Sequence[tuple[str, bytes]]) -> list[OutMessage]:
        """Encode manifests, keyed by `manifest_id`."""
        ...

    def checkpoint(self, instance: str, last_period_end: int, period_seconds: int, now_ms: int,
                   clusters: Mapping[str, int] | None = None) -> OutMessage:
        """Encode the instance's checkpoint, keyed by the instance id; `clusters` maps each
        published cluster to the end of the last period that carried it."""
        ...


def charge_lines(usage: PeriodUsage, org: OrgModel) -> list[ChargeLine]:
    """One `ChargeLine` per (workload, resource): the quantities `units` converts, with the org
    labels `org` resolves, in a stable order.

    Workloads with equal org labels share one `OrgAssignment` and one labels mapping (see
    `OrgModel.resolve`); neither is to be mutated.
    """
    lines: list[ChargeLine] = []
    append = lines.append
    period = usage.period
    method = method_id(usage.grain, usage.step_seconds)
    coverage_of = usage.coverage
    no_coverage = Decimal(0)
    for w, hours in unit_hours(usage):
        key = w.key
        assignment = org.resolve(key.kind, w.labels)
        others = org.other_labels(w.labels)
        coverage = coverage_of.get(key.cluster, no_coverage)
        for resource, used, requested, chargeable in hours:
            append(ChargeLine(
                period=period, workload=key, resource=resource,
                usage=used, request=requested, chargeable=chargeable,
                org=assignment, labels=others, coverage=coverage, method=method,
            ))
    return lines


@dataclass(frozen=True, slots=True)
class Prior:
    """What was published before for a (period, cluster): its revision and content hash."""

    revision: int
    content_hash: str


@dataclass(slots=True)
class PeriodResult:
    """Everything computed for one period, before publication."""

    period: Period
    usage: PeriodUsage
    priced: list[PricedLine]  # shared costs distributed, as the records carry them
    records: list[BillingRecord] = field(default_factory=list)
    manifests: list[PeriodManifest] = field(default_factory=list)
    coverage: Mapping[str, LabelCoverage] = field(default_factory=dict)
    status: str = "final"
    changed_clusters: tuple[str, ...] = ()
    # record_id -> Avro body: encoded once for the manifests' content hash, framed as is.
    bodies: dict[str, bytes] = field(default_factory=dict)

    @property
    def record_count(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class Pipeline:
    """The collaborators of an export, built by `exporter.wiring` (the composition root)."""

    source: UsageSource
    org: OrgModel
    codec: Codec
    clock: Clock
    settle_delay: int
    pricer: Pricer | None = None
    distribute: Distributor | None = None
    coverage_fn: CoverageFn | None = None
    min_coverage: Decimal = Decimal("0.95")
    incomplete_policy: str = "hold"
    exporter_version: str = __version__
    # `sysdig.clusters`, `sysdig.retired_clusters`, `periods.publish_empty`: see completeness.
    clusters: tuple[str, ...] = ()
    retired_clusters: tuple[str, ...] = ()
    publish_empty: bool = False
    # Idle capacity (`idle.enabled`, exporter/idle.py) and the rate card's rule for it.
    idle: bool = False
    idle_rule: IdleRule | None = None

    def measure(self, period: Period, published: Mapping[str, int] | None = None
                ) -> tuple[PeriodUsage, Mapping[str, int | None], list[PricedLine]]:
        """Fetch `period`, check it is complete, and price its lines with shared costs
        distributed: what its records will carry, before rounding to the record scale.

        Returns the usage, the expected clusters and the priced lines, with the `__idle__` lines
        (and their distribution) last when idle capacity is measured. Raises `MissingClusters`
        (an `IncompleteDataError`) as `compute` does, and `IncompleteDataError` when a cluster
        with charges has no allocatable series while idle is measured; `report` calls this too,
        so it shows what the worker would bill, or refuses what the worker would hold.
        """
        usage = self.source.fetch(period)
        expected = expected_clusters(
            configured=self.clusters,
            published=published,
            retired=self.retired_clusters)
        check(usage, expected, publish_empty=self.publish_empty)
        lines = charge_lines(usage, self.org)
        priced = self.pricer(lines) if self.pricer else [PricedLine(ln, None, None, None) for ln in lines]
        if self.distribute is not None:
            priced = self.distribute(priced)
        if self.idle:
            priced = self._with_idle(usage, priced)
        return usage, expected, priced

    def _with_idle(self, usage: PeriodUsage, priced: list[PricedLine]) -> list[PricedLine]:
        """`priced` followed by the period's `__idle__` lines, priced like their resource, and
        their distribution by `idle_rule`."""
        missing = sorted({p.line.workload.cluster for p in priced} - set(usage.allocatable))
        if missing:
            raise IncompleteDataError(
                f"period {usage.period}: no node allocatable series for cluster(s) "
                f"{', '.join(missing)}, so their idle capacity is unknown (idle.metric); held "
                "for retry")
        lines = idle_lines(usage, capacities(usage, (p.line for p in priced)))
        idle = self.pricer(lines) if self.pricer else [PricedLine(ln, None, None, None)
                                                       for ln in lines]
        return distribute_idle([*priced, *idle], self.idle_rule)

    def compute(self, period: Period, prior: Mapping[str, Prior] | None = None,
                published: Mapping[str, int] | None = None) -> PeriodResult:
        """Measure and price `period` and build its records and manifests (no publication).

        `prior` maps cluster -> what was published before for this period; a cluster whose
        content hash is unchanged keeps its revision, a changed one gets revision + 1.
        `published` maps clusters of earlier periods to the end of the last one that carried
        them (the worker's checkpoint). Those clusters and the configured ones are expected
        (a cluster of `prior` without data now is left as published: backfill reports it):
        `MissingClusters` (an `IncompleteDataError`) is raised when one of them, or a cluster
        the period shows, lacks usage or request series. Every expected cluster gets
        a manifest, with 0 records when it is published empty (`publish_empty`).
        """
        from exporter import records as rec
        from exporter.avro import load_schema

        usage, expected, priced = self.measure(period, published)
        empty = empty_clusters(usage, expected) if self.publish_empty else frozenset()
        coverage = self.coverage_fn([p.line for p in priced]) if self.coverage_fn else {}
        low = sorted(c for c, v in usage.coverage.items() if v < self.min_coverage and c not in empty)
        status = "low-coverage" if low else "final"
        if low and self.incomplete_policy == "hold":
            raise IncompleteDataError(
                f"period {period}: sample coverage below {self.min_coverage} for cluster(s) "
                f"{', '.join(low)} ({', '.join(format(usage.coverage[c], '.4f') for c in low)}); "
                "held for retry"
            )
        generated_at_ms = (period.end + self.settle_delay) * 1000
        prior = prior or {}
        by_cluster: dict[str, list[PricedLine]] = {}
        for p in priced:
            by_cluster.setdefault(p.line.workload.cluster, []).append(p)
        for cluster in (*usage.coverage, *expected):
            by_cluster.setdefault(cluster, [])
        records: list[BillingRecord] = []
        manifests: list[PeriodManifest] = []
        changed: list[str] = []
        method = method_id(usage.grain, usage.step_seconds)
        capacity: dict[str, list[Any]] = {}
        if self.idle:
            for cap in capacities(usage, (p.line for p in priced)):
                capacity.setdefault(cap.cluster, []).append(cap)
        # One writer for the period's records: their repeated values are encoded once.
        encode = load_schema("billing_record").encoder()
        bodies: dict[str, bytes] = {}

        def build(cluster: str, revision: int) -> tuple[list[BillingRecord], list[PeriodManifest]]:
            built = rec.build_records(by_cluster[cluster], revision=revision,
                                      generated_at_ms=generated_at_ms,
                                      exporter_version=self.exporter_version)
            bodies.update((r.record_id, encode(r)) for r in built)
            cov = {cluster: coverage[cluster]} if cluster in coverage else {}
            return built, rec.build_manifests(
                built, cov, {cluster: usage.coverage.get(cluster, Decimal(0))},
                period=period, method=method, revision=revision,
                generated_at_ms=generated_at_ms, exporter_version=self.exporter_version,
                status=status, bodies=bodies, capacity=capacity,
            )

        for cluster in sorted(by_cluster):
            before = prior.get(cluster)
            revision = before.revision if before else 0
            built, built_manifests = build(cluster, revision)
            # The manifest's content_hash is `rec.content_hash(built)`: reusing it saves
            # encoding every record once more.
            digest = next(m.content_hash for m in built_manifests if m.cluster == cluster)
            if before is None or before.content_hash != digest:
                changed.append(cluster)
            if before is not None and before.content_hash != digest:
                revision += 1
                built, built_manifests = build(cluster, revision)
            records.extend(built)
            manifests.extend(built_manifests)
        return PeriodResult(period, usage, priced, records, manifests, coverage, status,
                            tuple(changed), bodies)

    def messages(self, result: PeriodResult) -> list[OutMessage]:
        """The period's encoded records and manifests, with publication headers."""
        headers = (
            ("published_at", str(int(self.clock.time() * 1000)).encode()),
            ("exporter_version", self.exporter_version.encode()),
        )
        return [*self.codec.records(result.records, headers, result.bodies),
                *self.codec.manifests(result.manifests, headers)]

    def publish(self, result: PeriodResult, sink: PeriodSink, instance: str,
                checkpoint_end: int | None = None,
                clusters: Mapping[str, int] | None = None) -> None:
        """Publish records, manifests and the checkpoint (with `clusters`) in one transaction."""
        end = result.period.end if checkpoint_end is None else checkpoint_end
        checkpoint = self.codec.checkpoint(instance, end, result.period.length,
                                           int(self.clock.time() * 1000), clusters)
        sink.publish(self.messages(result), checkpoint)
        log.info("period published", extra={
            "period_start": result.period.start, "period_end": result.period.end,
            "records": len(result.records), "manifests": len(result.manifests),
            "status": result.status, "instance": instance,
        })

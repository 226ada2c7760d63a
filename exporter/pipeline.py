"""The one export path: measure a period chunk by chunk, price it, build records, publish
atomically.

A period is measured in chunks, one per group of clusters (`UsageSource.fetch_chunks`); a
cluster never spans chunks, and everything computed per cluster (completeness, shared-cost
pools, idle capacity, label coverage, content hash and revision) is computed per chunk. Each
chunk's records are built, encoded and produced into the period's one transaction, then dropped
before the next chunk is built, so memory grows with the largest chunk, not the fleet. Checks
of the whole period (an expected cluster no chunk covered, coverage below the minimum) are
settled after the last chunk; any failure aborts the transaction, so nothing of the period is
visible. Manifests (one per cluster, small) follow every record, then the checkpoint.

Both the live worker and backfill export with `Pipeline.export`, which is what makes a backfill
over unchanged data byte-identical to the live export. `Pipeline.compute` (records of a whole
period, kept) and `Pipeline.measure` (priced lines, for `report`) collect the same chunks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from exporter import __version__
from exporter.clock import Clock
from exporter.completeness import Tally, empty_clusters, expected_clusters, remembered
from exporter.errors import IncompleteDataError
from exporter.idle import capacities, idle_lines
from exporter.idle import distribute as distribute_idle
from exporter.model import (
    ChargeLine,
    LabelCoverage,
    PeriodUsage,
    PricedLine,
    covered_clusters,
    merge_usage,
)
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pricing import IdleRule
from exporter.sink import Batch, OutMessage, PeriodSink
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
                   clusters: Mapping[str, int] | None = None,
                   claims: Mapping[str, int] | None = None) -> OutMessage:
        """Encode the instance's checkpoint, keyed by the instance id; `clusters` maps each
        published cluster to the end of the last period that carried it, `claims` each cluster
        whose claims were billed to the end of the last period that billed one."""
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
    """What was published before for a (period, cluster): its revision and content hash, and
    whether it billed claims (then a recomputation without claim series is held)."""

    revision: int
    content_hash: str
    claims: bool = False


@dataclass(slots=True)
class PeriodResult:
    """A whole period's records and manifests, collected by `Pipeline.compute` (not published)."""

    period: Period
    usage: PeriodUsage
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
class Chunk:
    """One chunk's records (with their Avro bodies) and its clusters' manifests, whose
    `status` the period settles (`_PeriodRun.finished`)."""

    usage: PeriodUsage
    records: list[BillingRecord]
    manifests: list[PeriodManifest]
    bodies: dict[str, bytes]
    coverage: Mapping[str, LabelCoverage]
    changed: frozenset[str]  # clusters new, or whose content hash differs from `prior`'s


@dataclass(frozen=True, slots=True)
class PeriodSummary:
    """What one export of a period published.

    `manifests` are every cluster's, published or not; `published` the clusters whose records
    and manifest went out (all of them unless a `select` chose), `records` how many records;
    `changed` the clusters new or changed against `prior`, sorted; `clusters` the checkpoint's
    cluster map and `claims` its map of clusters with billed claims (None when the export did
    not track one).
    """

    period: Period
    step_seconds: int
    status: str
    manifests: tuple[PeriodManifest, ...]
    published: tuple[str, ...]
    records: int
    changed: tuple[str, ...]
    coverage: Mapping[str, LabelCoverage]
    clusters: Mapping[str, int] | None
    claims: Mapping[str, int] | None = None


Select = Callable[[str, bool], bool]
"""Whether to publish a cluster, given its name and whether it changed against `prior`."""


class _PeriodRun:
    """One pass over a period's chunks: the checks of the whole period, carried from chunk to
    chunk, and each complete chunk's records and manifests."""

    def __init__(self, pipeline: Pipeline, period: Period, prior: Mapping[str, Prior] | None,
                 published: Mapping[str, int] | None,
                 claims: Mapping[str, int] | None = None) -> None:
        self._p = pipeline
        self.period = period
        self._prior = prior or {}
        self.expected = expected_clusters(configured=pipeline.clusters, published=published,
                                          retired=pipeline.retired_clusters)
        # Clusters whose claims were billed before: expected to show claims (completeness).
        released = {*pipeline.retired_clusters, *pipeline.clusters_without_claims}
        before = {**(claims or {}), **{c: period.end for c, pr in self._prior.items() if pr.claims}}
        self.claims_before = ({c: end for c, end in before.items() if c not in released}
                              if pipeline.storage else {})
        self.claim_clusters: set[str] = set()  # clusters of the chunks with claim series
        self._tally = Tally(period, self.expected, publish_empty=pipeline.publish_empty,
                            claims=self.claims_before)
        self._low: dict[str, Decimal] = {}
        self._no_allocatable: set[str] = set()
        self.step_seconds = 0
        self.generated_at_ms = (period.end + pipeline.settle_delay) * 1000

    @property
    def status(self) -> str:
        """`low-coverage` when a cluster's sample coverage is below the minimum, else `final`
        (known once every chunk was measured)."""
        return "low-coverage" if self._low else "final"

    def measured(self) -> Iterator[tuple[PeriodUsage, list[PricedLine]]]:
        """Each complete chunk's usage and priced lines (shared costs distributed, idle lines
        last), in the source's order; then, for expected clusters no chunk covered (published
        empty), one chunk without workloads.

        A chunk that fails a check is not priced, and neither is any later one; the remaining
        chunks are still measured so that the error names every cluster, as one check of the
        whole period would. After the last chunk the period's first problem is raised:
        `MissingClusters`, then clusters with charges and no allocatable series (idle), then
        coverage below `min_coverage` under the `hold` policy.
        """
        p = self._p
        hold = p.incomplete_policy == "hold"
        failed = False
        grain: str | None = None
        for usage in p.source.fetch_chunks(self.period):
            grain = usage.grain
            self.step_seconds = usage.step_seconds
            self.claim_clusters.update(usage.claim_clusters)
            complete = self._tally.add(usage)
            empty = (empty_clusters(usage, self.expected) if p.publish_empty else frozenset())
            low = {c: v for c, v in usage.coverage.items() if v < p.min_coverage and c not in empty}
            self._low.update(low)
            if not complete:
                failed = True
                continue
            if failed and not p.idle:
                continue  # only the checks that need no lines are left to make
            lines = charge_lines(usage, p.org)
            if p.idle:
                missing = {ln.workload.cluster for ln in lines}.difference(usage.allocatable)
                if missing:
                    self._no_allocatable.update(missing)
                    failed = True
            if failed or (low and hold):
                failed = True
                continue
            priced = p.price(usage, lines)
            del lines
            yield usage, priced
            del usage, priced  # not kept while the next chunk is fetched
        self._tally.finish()
        if self._no_allocatable:
            raise IncompleteDataError(
                f"period {self.period}: no node allocatable series for cluster(s) "
                f"{', '.join(sorted(self._no_allocatable))}, so their idle capacity is unknown "
                "(idle.metric); held for retry")
        if self._low and hold:
            low_clusters = sorted(self._low)
            raise IncompleteDataError(
                f"period {self.period}: sample coverage below {p.min_coverage} for cluster(s) "
                f"{', '.join(low_clusters)} "
                f"({', '.join(format(self._low[c], '.4f') for c in low_clusters)}); "
                "held for retry"
            )
        leftover = frozenset(self.expected).difference(self._tally.covered)
        if leftover and grain is not None:
            yield PeriodUsage(self.period, self.step_seconds, grain, (),
                              dict.fromkeys(sorted(leftover), Decimal(0)),
                              clusters=leftover), []

    def build(self, usage: PeriodUsage, priced: list[PricedLine]) -> Chunk:
        """The records and manifests of one chunk's clusters: every cluster it shows, and the
        expected ones it covers. A cluster whose content hash is unchanged against `prior`
        keeps its revision, a changed one gets revision + 1."""
        from exporter import manifests as mf
        from exporter import records as rec
        from exporter.avro import load_schema

        p = self._p
        period = self.period
        coverage = p.coverage_fn([q.line for q in priced]) if p.coverage_fn else {}
        generated_at_ms = self.generated_at_ms
        by_cluster: dict[str, list[PricedLine]] = {}
        for q in priced:
            by_cluster.setdefault(q.line.workload.cluster, []).append(q)
        mine = covered_clusters(usage)
        for cluster in (*usage.coverage, *(c for c in self.expected if c in mine)):
            by_cluster.setdefault(cluster, [])
        method = method_id(usage.grain, usage.step_seconds)
        capacity: dict[str, list[Any]] = {}
        if p.idle:
            for cap in capacities(usage, (q.line for q in priced)):
                capacity.setdefault(cap.cluster, []).append(cap)
        # One writer per chunk: repeated values are encoded once, and its memo stays small.
        encode = load_schema("billing_record").encoder()
        bodies: dict[str, bytes] = {}

        def build(cluster: str, revision: int) -> tuple[list[BillingRecord], list[PeriodManifest]]:
            built = rec.build_records(by_cluster[cluster], revision=revision,
                                      generated_at_ms=generated_at_ms,
                                      exporter_version=p.exporter_version)
            bodies.update((r.record_id, encode(r)) for r in built)
            cov = {cluster: coverage[cluster]} if cluster in coverage else {}
            return built, mf.build_manifests(
                built, cov, {cluster: usage.coverage.get(cluster, Decimal(0))},
                period=period, method=method, revision=revision,
                generated_at_ms=generated_at_ms, exporter_version=p.exporter_version,
                status="final", bodies=bodies, capacity=capacity,
            )

        records: list[BillingRecord] = []
        manifests: list[PeriodManifest] = []
        changed: set[str] = set()
        for cluster in sorted(by_cluster):
            before = self._prior.get(cluster)
            revision = before.revision if before else 0
            built, built_manifests = build(cluster, revision)
            # The manifest's content_hash is `mf.content_hash(built)`: reusing it saves
            # encoding every record once more.
            digest = next(m.content_hash for m in built_manifests if m.cluster == cluster)
            if before is None or before.content_hash != digest:
                changed.add(cluster)
            if before is not None and before.content_hash != digest:
                revision += 1
                built, built_manifests = build(cluster, revision)
            records.extend(built)
            manifests.extend(built_manifests)
        return Chunk(usage, records, manifests, bodies, coverage, frozenset(changed))

    def finished(self, manifests: Sequence[PeriodManifest]) -> list[PeriodManifest]:
        """`manifests` sorted by cluster, with the period's status (once every chunk was
        measured): a period with a cluster below the minimum coverage is `low-coverage` in
        every manifest, as published under the `publish-flagged` policy."""
        status = self.status
        ordered = sorted(manifests, key=lambda m: m.cluster)
        if status == "final":
            return ordered
        return [dataclasses.replace(m, status=status, complete=False) for m in ordered]


class PeriodBatch:
    """One period's export as a `sink.Batch`: each call of `messages` measures the period again
    from the source, chunk by chunk, and yields each chunk's records as soon as they are built,
    then the manifests; `checkpoint` follows. `summary` is what the last complete pass
    published (None before one completed).

    `select` picks the clusters to publish (None: every one; a batch that selects none has no
    checkpoint, so nothing is published); `observe` sees each chunk's published records.
    `published` is the checkpoint's cluster map before this period (None: the checkpoint
    carries no cluster map) and `claims` its map of clusters with billed claims (None: not
    tracked); `checkpoint_end` the checkpoint's period end (default: the period's).
    """

    def __init__(self, pipeline: Pipeline, period: Period, instance: str, *,
                 prior: Mapping[str, Prior] | None = None,
                 published: Mapping[str, int] | None = None,
                 claims: Mapping[str, int] | None = None,
                 checkpoint_end: int | None = None, select: Select | None = None,
                 observe: Callable[[Sequence[BillingRecord]], None] | None = None) -> None:
        self._p = pipeline
        self.period = period
        self._instance = instance
        self._prior = prior
        self._published = published
        self._claims = claims
        self._end = period.end if checkpoint_end is None else checkpoint_end
        self._select = select
        self._observe = observe
        self.summary: PeriodSummary | None = None

    def messages(self) -> Iterator[OutMessage]:
        self.summary = None
        p = self._p
        codec = p.codec
        select = self._select
        headers = (
            ("published_at", str(int(p.clock.time() * 1000)).encode()),
            ("exporter_version", p.exporter_version.encode()),
        )
        run = _PeriodRun(p, self.period, self._prior, self._published, self._claims)
        manifests: list[PeriodManifest] = []
        coverage: dict[str, LabelCoverage] = {}
        changed: set[str] = set()
        chosen: set[str] = set()
        count = 0
        for usage, priced in run.measured():
            chunk = run.build(usage, priced)
            del usage, priced
            manifests.extend(chunk.manifests)
            coverage.update(chunk.coverage)
            changed.update(chunk.changed)
            mine = {m.cluster for m in chunk.manifests
                    if select is None or select(m.cluster, m.cluster in chunk.changed)}
            chosen.update(mine)
            records = (chunk.records if select is None
                       else [r for r in chunk.records if r.cluster in mine])
            if self._observe is not None:
                self._observe(records)
            count += len(records)
            encoded = codec.records(records, headers, chunk.bodies)
            del chunk, records
            yield from encoded
            del encoded  # the chunk's last objects, before the next chunk is built
        final = run.finished(manifests)
        yield from codec.manifests([m for m in final if m.cluster in chosen], headers)
        published = tuple(sorted(chosen))
        clusters = (None if self._published is None else
                    remembered(self._published, published, self.period.end, p.retired_clusters))
        claims = (None if self._claims is None else
                  remembered(run.claims_before,
                             run.claim_clusters.intersection(published) if p.storage else (),
                             self.period.end))
        self.summary = PeriodSummary(self.period, run.step_seconds, run.status, tuple(final),
                                     published, count, tuple(sorted(changed)), coverage, clusters,
                                     claims)

    def checkpoint(self) -> OutMessage | None:
        summary = self.summary
        if summary is None:
            raise RuntimeError("PeriodBatch.checkpoint before its messages were generated")
        if self._select is not None and not summary.published:
            return None
        p = self._p
        return p.codec.checkpoint(self._instance, self._end, self.period.length,
                                  int(p.clock.time() * 1000), summary.clusters, summary.claims)


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
    # Claims are charged (`resources.storage.enabled`): clusters that had claims are expected
    # to keep showing them, but for `resources.storage.clusters_without_claims`.
    storage: bool = False
    clusters_without_claims: tuple[str, ...] = ()
    # Idle capacity (`idle.enabled`, exporter/idle.py) and the rate card's rule for it.
    idle: bool = False
    idle_rule: IdleRule | None = None

    def price(self, usage: PeriodUsage, lines: list[ChargeLine]) -> list[PricedLine]:
        """`lines` (of `usage`'s clusters) priced, shared costs distributed, and, when idle
        capacity is measured, followed by `usage`'s `__idle__` lines and their distribution."""
        priced = self.pricer(lines) if self.pricer else [PricedLine(ln, None, None, None) for ln in lines]
        if self.distribute is not None:
            priced = self.distribute(priced)
        if self.idle:
            idle = idle_lines(usage, capacities(usage, (q.line for q in priced)))
            idle_priced = self.pricer(idle) if self.pricer else [
                PricedLine(ln, None, None, None) for ln in idle]
            priced = distribute_idle([*priced, *idle_priced], self.idle_rule)
        return priced

    def measure(self, period: Period, published: Mapping[str, int] | None = None
                ) -> tuple[PeriodUsage, Mapping[str, int | None], list[PricedLine]]:
        """Fetch `period`, check it is complete, and price its lines with shared costs
        distributed: what its records will carry, before rounding to the record scale.

        Returns the usage, the expected clusters and the priced lines of every chunk, each
        chunk's `__idle__` lines (and their distribution) after its own when idle capacity is
        measured. Raises what `export` raises for a period it would hold; `report` calls this,
        so it shows what the worker would bill, or refuses what the worker would hold.
        """
        run = _PeriodRun(self, period, None, published)
        usages: list[PeriodUsage] = []
        priced: list[PricedLine] = []
        for usage, lines in run.measured():
            usages.append(usage)
            priced.extend(lines)
        return merge_usage(usages), run.expected, priced

    def compute(self, period: Period, prior: Mapping[str, Prior] | None = None,
                published: Mapping[str, int] | None = None) -> PeriodResult:
        """Every record and manifest of `period`, as `export` builds them, kept (nothing is
        published): for `report`-like callers and tests, not for a fleet's export.

        `prior` maps cluster -> what was published before for this period; a cluster whose
        content hash is unchanged keeps its revision, a changed one gets revision + 1.
        `published` maps clusters of earlier periods to the end of the last one that carried
        them (the worker's checkpoint). Those clusters and the configured ones are expected
        (a cluster of `prior` without data now is left as published: backfill reports it):
        `MissingClusters` (an `IncompleteDataError`) is raised when one of them, or a cluster
        the period shows, lacks usage or request series. Every expected cluster gets
        a manifest, with 0 records when it is published empty (`publish_empty`).
        """
        run = _PeriodRun(self, period, prior, published)
        usages: list[PeriodUsage] = []
        records: list[BillingRecord] = []
        manifests: list[PeriodManifest] = []
        coverage: dict[str, LabelCoverage] = {}
        changed: set[str] = set()
        bodies: dict[str, bytes] = {}
        for usage, priced in run.measured():
            chunk = run.build(usage, priced)
            usages.append(usage)
            records.extend(chunk.records)
            manifests.extend(chunk.manifests)
            coverage.update(chunk.coverage)
            changed.update(chunk.changed)
            bodies.update(chunk.bodies)
        return PeriodResult(period, merge_usage(usages), records, run.finished(manifests),
                            coverage, run.status, tuple(sorted(changed)), bodies)

    def batch(self, period: Period, instance: str, *, prior: Mapping[str, Prior] | None = None,
              published: Mapping[str, int] | None = None,
              claims: Mapping[str, int] | None = None, checkpoint_end: int | None = None,
              select: Select | None = None,
              observe: Callable[[Sequence[BillingRecord]], None] | None = None) -> PeriodBatch:
        """`period`'s export as a batch for a `PeriodSink` (see `PeriodBatch`)."""
        return PeriodBatch(self, period, instance, prior=prior, published=published,
                           claims=claims, checkpoint_end=checkpoint_end, select=select,
                           observe=observe)

    def export(self, period: Period, sink: PeriodSink, instance: str, *,
               prior: Mapping[str, Prior] | None = None,
               published: Mapping[str, int] | None = None,
               claims: Mapping[str, int] | None = None, checkpoint_end: int | None = None,
               select: Select | None = None,
               observe: Callable[[Sequence[BillingRecord]], None] | None = None) -> PeriodSummary:
        """Measure `period` chunk by chunk and publish its records, manifests and checkpoint in
        one transaction of `sink` (see `PeriodBatch` for the arguments); all or nothing.

        Raises what the source raises, `MissingClusters` and `IncompleteDataError` for a period
        to hold (see `compute`), and the sink's errors; nothing of the period is then visible.
        """
        batch = self.batch(period, instance, prior=prior, published=published, claims=claims,
                           checkpoint_end=checkpoint_end, select=select, observe=observe)
        sink.publish(batch)
        summary = batch.summary
        assert summary is not None
        if summary.published or select is None:
            log.info("period published", extra={
                "period_start": period.start, "period_end": period.end,
                "records": summary.records, "manifests": len(summary.published),
                "status": summary.status, "instance": instance,
            })
        return summary


def drain(batch: Batch) -> None:
    """Generate `batch` without publishing it (a dry run): the same work, nothing sent."""
    for _ in batch.messages():
        pass
    batch.checkpoint()

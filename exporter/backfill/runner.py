"""Running a planned backfill: each period exported in order, chunk by chunk.

`prepare` reads the state, plans the range and starts the sink; `Backfill` then exports each
period with the live worker's `Pipeline.export` (one Sysdig source per step, under an adaptive
concurrency limit), publishing new or changed period-clusters one transaction per period,
through the worker's own publication policy (`ExactlyOnceSink`). `Report` is what a run did.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from exporter.backfill.plan import Options, PeriodPlan, check_range, plan_periods
from exporter.backfill.state import (
    RangeCheckpointSink,
    read_backfill_checkpoint,
    read_live_checkpoint,
    read_published,
    resolve_ids,
)
from exporter.clock import Clock
from exporter.commands import check_team
from exporter.config import Config
from exporter.errors import (
    ConfigError,
    ExporterError,
    FencedError,
    RetryableError,
    SinkError,
    SinkUnavailable,
    SourceAuthError,
    SourceUnavailable,
)
from exporter.model import PeriodUsage
from exporter.periods import Period, format_duration, iso, iter_periods
from exporter.pipeline import PeriodSummary, Pipeline, drain
from exporter.publication import ExactlyOnceSink
from exporter.sink import FixedBatch, PeriodSink
from exporter.source import UsageSource
from exporter.sysdig import Pinned
from exporter.wiring import (
    build_checkpoints,
    build_codec,
    build_pipeline,
    build_retention,
    build_sink,
    build_usage_source,
)

# One logger for the whole package: operators filter on it (docs/backfill.md).
log = logging.getLogger("exporter.backfill")


class BackfillFailed(ExporterError):
    """Some periods were not done (exit 3); running the same command again resumes."""

    exit_code = 3


# --------------------------------------------------------------------------------------------
# Measuring: one Sysdig source per step, bounded adaptive concurrency
# --------------------------------------------------------------------------------------------


class StepSource:
    """A `UsageSource` measuring each period at the step its plan chose.

    `build(step)` makes a source that always measures at `step` (built once per step, lazily).
    """

    def __init__(self, build: Callable[[int], UsageSource], steps: Mapping[Period, int]) -> None:
        self._build = build
        self._steps = dict(steps)
        self._sources: dict[int, UsageSource] = {}
        self._lock = threading.Lock()

    def step_for(self, period: Period) -> int:
        try:
            return self._steps[period]
        except KeyError:
            raise ExporterError(f"backfill: period {period} is not in the plan") from None

    def fetch(self, period: Period) -> PeriodUsage:
        return self._source(period).fetch(period)

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        return self._source(period).fetch_chunks(period)

    def _source(self, period: Period) -> UsageSource:
        step = self.step_for(period)
        with self._lock:
            source = self._sources.get(step)
            if source is None:
                source = self._sources[step] = self._build(step)
        return source


def sysdig_at_step(cfg: Config, clock: Clock, on_request: Any = None) -> Callable[[int], UsageSource]:
    """`build(step)` for `StepSource`: the configured Sysdig source, pinned to `step`."""

    def build(step: int) -> UsageSource:
        pinned = cfg.model_copy(update={
            "periods": cfg.periods.model_copy(update={"resolution": step})})
        return build_usage_source(pinned, clock, on_request=on_request, retention=Pinned(step))

    return build


class AdaptiveLimit:
    """A concurrency limit that halves when Sysdig throttles and grows by one per success (AIMD).

    At most `limit` holders at a time, between 1 and `maximum`. Several throttling signals
    without a success in between count as one decrease, so one 429 storm does not collapse it
    faster than work completes. Thread-safe; `acquire` blocks while the limit is reached.
    """

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError("maximum must be >= 1")
        self.maximum = maximum
        self._limit = maximum
        self.lowest = maximum
        self.throttles = 0
        self._active = 0
        self._epoch = 0
        self._decreased_in = -1
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        with self._cond:
            return self._limit

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of the block."""
        with self._cond:
            while self._active >= self._limit:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def throttled(self) -> None:
        """A throttling signal (429, or a retryable failure): multiplicative decrease."""
        with self._cond:
            self.throttles += 1
            if self._decreased_in == self._epoch:
                return
            self._decreased_in = self._epoch
            self._limit = max(1, self._limit // 2)
            self.lowest = min(self.lowest, self._limit)
            log.warning("Sysdig throttles the backfill; lowering its concurrency",
                        extra={"concurrency": self._limit})

    def succeeded(self) -> None:
        """A unit of work completed: additive increase."""
        with self._cond:
            self._epoch += 1
            if self._limit < self.maximum:
                self._limit += 1
                self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# What a run did, and where its progress goes
# --------------------------------------------------------------------------------------------


Change = Literal["new", "changed", "unchanged", "missing"]
Status = Literal["published", "forced", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class ClusterChange:
    """What happens to one period-cluster: `new` (revision 0), `changed` (old + 1), `unchanged`,
    or `missing`: published before, but Sysdig has no data for it now (left as published)."""

    cluster: str
    change: Change
    revision_before: int | None
    revision: int
    records: int
    published: bool


@dataclass(slots=True)
class PeriodOutcome:
    """One period's fate; `records` and totals count what was (or would be) published."""

    period: Period
    step: int
    status: Status
    clusters: tuple[ClusterChange, ...] = ()
    records: int = 0
    core_hours: Decimal = Decimal(0)
    gib_hours: Decimal = Decimal(0)
    cost: dict[str, Decimal] = field(default_factory=dict)
    error: str | None = None

    @property
    def changed(self) -> bool:
        return any(c.change in ("new", "changed") for c in self.clusters)


@dataclass(slots=True)
class Report:
    """What a backfill run did (or, with `dry_run`, would do)."""

    start: int
    end: int
    instance: str
    dry_run: bool
    retention: str
    resumed_from: int | None = None
    outcomes: list[PeriodOutcome] = field(default_factory=list)
    planned: int = 0
    throttles: int = 0
    lowest_concurrency: int = 0
    error: ExporterError | None = None

    @property
    def failed(self) -> list[PeriodOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        if isinstance(self.error, FencedError):
            return 4
        if self.error is not None or self.failed or len(self.outcomes) < self.planned:
            return 3
        return 0

    def counts(self) -> dict[str, int]:
        done = [o for o in self.outcomes if o.status != "failed"]
        return {
            "periods": self.planned,
            "changed": sum(1 for o in done if o.changed),
            "skipped": sum(1 for o in done if o.status == "skipped"),
            "forced": sum(1 for o in done if o.status == "forced"),
            "failed": len(self.failed),
            "not_reached": self.planned - len(self.outcomes),
            "records": sum(o.records for o in self.outcomes),
        }

    def totals(self) -> tuple[Decimal, Decimal, dict[str, Decimal]]:
        """(Core-Hours, GiB-Hours, cost per currency) of the published records."""
        cost: dict[str, Decimal] = {}
        for o in self.outcomes:
            for cur, v in o.cost.items():
                cost[cur] = cost.get(cur, Decimal(0)) + v
        return (sum((o.core_hours for o in self.outcomes), Decimal(0)),
                sum((o.gib_hours for o in self.outcomes), Decimal(0)), cost)


class ProgressView(Protocol):
    """Where progress goes while periods complete; called from the publishing thread only."""

    def start(self, total: int) -> None:
        """`total` periods are about to be processed. Non-blocking; raises nothing."""
        ...

    def advance(self, outcome: PeriodOutcome) -> None:
        """One more period is done (published, skipped or failed). Non-blocking; raises nothing."""
        ...

    def stop(self) -> None:
        """The run is over (or interrupted); release the display. Idempotent."""
        ...


class NoProgress:
    """No progress display (stderr is not a terminal)."""

    def start(self, total: int) -> None:
        pass

    def advance(self, outcome: PeriodOutcome) -> None:
        pass

    def stop(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Running: one period after the other, one transaction each
# --------------------------------------------------------------------------------------------


def _totals(records: Sequence[Any]) -> tuple[Decimal, Decimal, dict[str, Decimal]]:
    cpu = mem = Decimal(0)
    cost: dict[str, Decimal] = {}
    for r in records:
        if r.allocation == "shared-source":
            continue  # audit lines; their quantity is in the shared-distribution lines
        if r.resource == "cpu":
            cpu += r.chargeable_quantity
        else:
            mem += r.chargeable_quantity
        if r.cost is not None and r.currency:
            cost[r.currency] = cost.get(r.currency, Decimal(0)) + r.cost
    return cpu, mem, cost


class _Totals:
    """Core-Hours, GiB-Hours and cost per currency of the records one export published."""

    def __init__(self) -> None:
        self.cpu = self.mem = Decimal(0)
        self.cost: dict[str, Decimal] = {}

    def add(self, records: Sequence[Any]) -> None:
        cpu, mem, cost = _totals(records)
        self.cpu += cpu
        self.mem += mem
        for cur, v in cost.items():
            self.cost[cur] = self.cost.get(cur, Decimal(0)) + v


class Backfill:
    """Exports planned periods in order, one transaction per period, through the worker's path.

    Each period is measured chunk by chunk and its new or changed period-clusters are
    published as they are built (`Pipeline.export`), so memory is bounded by a chunk, as the
    worker's. The Sysdig queries of a period run concurrently within the source
    (`sysdig.max_concurrency`), under an `AdaptiveLimit` of `backfill.max_concurrency` that
    Sysdig's throttling lowers. A period whose queries keep failing transiently is retried,
    honouring Retry-After, for at most `backfill.period_timeout` seconds on the injected clock
    (each try's transaction aborted), then reported failed. The checkpoint moves to the end of
    the done prefix (a failed period keeps it from moving past it, so a rerun redoes it).
    Unchanged periods publish nothing; when a run that committed a checkpoint (`committed`: one
    already there when resuming) completes, a last checkpoint-only transaction moves it to the
    range's end, so the same command run again later starts afresh instead of resuming. With
    `sink` None nothing is published (dry run): the periods are measured and built the same way.
    """

    def __init__(self, pipeline: Pipeline, plans: Sequence[PeriodPlan], clock: Clock, cfg: Config, *,
                 sink: PeriodSink | None, instance: str, force: bool = False,
                 limit: AdaptiveLimit | None = None, progress: ProgressView | None = None,
                 committed: int | None = None) -> None:
        self._pipeline = pipeline
        self._plans = list(plans)
        self._clock = clock
        self._cfg = cfg.backfill
        self._sink = sink
        self._instance = instance
        self._force = force
        self.limit = limit or AdaptiveLimit(cfg.backfill.max_concurrency)
        self._progress = progress or NoProgress()
        self._committed = committed
        self._length = cfg.periods.length
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Stop after the period being published (safe from a signal handler)."""
        self._stop.set()

    def _select(self, cluster: str, changed: bool) -> bool:
        return changed or self._force

    def export(self, plan: PeriodPlan, checkpoint_end: int) -> PeriodOutcome:
        """Export one period (or, in a dry run, build it), retrying transient source failures
        within `backfill.period_timeout`."""
        deadline = self._clock.time() + self._cfg.period_timeout
        backoff = 1.0
        while True:
            totals = _Totals()
            with self.limit.slot():
                try:
                    batch = self._pipeline.batch(
                        plan.period, self._instance, prior=plan.prior,
                        checkpoint_end=checkpoint_end, select=self._select, observe=totals.add)
                    if self._sink is None:
                        drain(batch)
                    else:
                        self._sink.publish(batch)
                except SinkUnavailable:
                    raise  # the publication policy's retries are spent: the broker is gone
                except RetryableError as exc:
                    failure = exc
                else:
                    self.limit.succeeded()
                    assert batch.summary is not None
                    return self._outcome(plan, batch.summary, totals, checkpoint_end)
            self.limit.throttled()
            remaining = deadline - self._clock.time()
            if self._stop.is_set():
                raise SourceUnavailable(f"{failure} (not retried: the backfill is stopping)")
            if remaining <= 0:
                raise SourceUnavailable(
                    f"{failure} (gave up on period {plan.period} after "
                    f"{format_duration(self._cfg.period_timeout)}, backfill.period_timeout)"
                )
            after = failure.retry_after if isinstance(failure, SourceUnavailable) else None
            wait = after if after is not None and after > 0 else backoff
            backoff = min(backoff * 2, 60.0)
            log.warning("period retried", extra={"period": str(plan.period), "error": str(failure),
                                                 "wait_seconds": wait})
            self._clock.sleep(min(wait, remaining))

    def _outcome(self, plan: PeriodPlan, summary: PeriodSummary, totals: _Totals,
                 checkpoint_end: int) -> PeriodOutcome:
        changed = set(summary.changed)
        publish = set(summary.published)
        clusters = []
        for m in summary.manifests:
            before = plan.prior.get(m.cluster)
            change: Change = ("new" if before is None
                              else "changed" if m.cluster in changed else "unchanged")
            clusters.append(ClusterChange(
                m.cluster, change, None if before is None else before.revision, m.revision,
                m.record_count, m.cluster in publish))
        seen = {c.cluster for c in clusters}
        clusters += [ClusterChange(c, "missing", p.revision, p.revision, 0, False)
                     for c, p in sorted(plan.prior.items()) if c not in seen]
        if not publish:
            return PeriodOutcome(plan.period, summary.step_seconds, "skipped", tuple(clusters))
        if self._sink is not None:
            self._committed = checkpoint_end
        status: Status = "published" if changed & publish else "forced"
        return PeriodOutcome(plan.period, summary.step_seconds, status, tuple(clusters),
                             summary.records, totals.cpu, totals.mem, dict(totals.cost))

    def run(self, report: Report) -> Report:
        """Process every planned period in order; fills and returns `report`.

        Never raises `ExporterError`: a failed period is recorded and the run goes on; an error
        that makes further publication pointless (fenced, producer unusable, broker gone after
        retries, token rejected) stops the run and is kept in `report.error`.
        """
        report.planned = len(self._plans)
        prefix_end = self._plans[0].period.start if self._plans else report.start
        broken = False
        self._progress.start(len(self._plans))
        try:
            for plan in self._plans:
                try:
                    outcome = self.export(plan, plan.period.end if not broken else prefix_end)
                except (SinkError, SinkUnavailable, SourceAuthError) as exc:
                    # Every later period would fail the same way: fenced, broker or token gone.
                    report.error = exc
                    self._stop.set()
                    log.error("backfill stopping", extra={"period": str(plan.period), "error": str(exc)})
                    break
                except ExporterError as exc:
                    outcome = PeriodOutcome(plan.period, plan.step, "failed", error=str(exc))
                    log.error("period failed", extra={"period": str(plan.period), "error": str(exc)})
                except Exception as exc:
                    # A defect must not lose the other periods nor end in a traceback.
                    log.exception("unexpected error in a period", extra={"period": str(plan.period)})
                    outcome = PeriodOutcome(plan.period, plan.step, "failed",
                                            error=f"unexpected {type(exc).__name__}: {exc}")
                if outcome.status == "failed":
                    broken = True
                elif not broken:
                    prefix_end = plan.period.end
                report.outcomes.append(outcome)
                self._progress.advance(outcome)
                if self._stop.is_set():
                    if len(report.outcomes) < report.planned:
                        report.error = BackfillFailed(
                            f"stopped after {len(report.outcomes)} of {report.planned} periods")
                    break
            if (report.error is None and not broken and self._committed is not None
                    and self._committed < report.end and self._sink is not None):
                self._finish(report.end)
        finally:
            self._progress.stop()
        report.throttles = self.limit.throttles
        report.lowest_concurrency = self.limit.lowest
        return report

    def _finish(self, end: int) -> None:
        sink = self._sink
        assert sink is not None
        checkpoint = self._pipeline.codec.checkpoint(self._instance, end, self._length,
                                                     int(self._clock.time() * 1000))
        try:
            sink.publish(FixedBatch((), checkpoint))
        except ExporterError as exc:
            # Every period is done; a rerun would only resume earlier than needed.
            log.warning("final checkpoint not committed", extra={"error": str(exc)})
            return
        self._committed = end


# --------------------------------------------------------------------------------------------
# Preparing: state, plan and sink, before anything is measured
# --------------------------------------------------------------------------------------------


SinkFactory = Callable[[Config, Clock, str], PeriodSink]


def default_sink(cfg: Config, clock: Clock, instance: str) -> PeriodSink:
    """The transactional Kafka sink under the backfill's own transactional id."""
    sink: PeriodSink = build_sink(cfg, clock, transactional_id=instance)
    return sink


def require_token(cfg: Config) -> None:
    """Fail before anything is read when no Sysdig token is configured (`ConfigError`)."""
    if not cfg.sysdig.resolved_token():
        raise ConfigError(
            "sysdig.token: not set (use sysdig.token, sysdig.token_file or CHARGEBACK_SYSDIG__TOKEN)"
        )


@dataclass(slots=True)
class BackfillJob:
    """A planned backfill, its sink started (unless a dry run); `run` it once."""

    runner: Backfill
    report: Report
    sink: PeriodSink | None

    def run(self) -> Report:
        """Run, then close the sink (aborting anything left open). Never raises `ExporterError`."""
        try:
            if self.report.error is None:
                self.runner.run(self.report)
        finally:
            if self.sink is not None:
                self.sink.close()
        return self.report


def prepare(cfg: Config, opts: Options, clock: Clock, *, sink_factory: SinkFactory = default_sink,
            progress: ProgressView | None = None) -> BackfillJob:
    """Read the state, plan the range and start the sink; nothing is measured or published yet.

    Raises `ConfigError` (including `BackfillRefused`) for bad input and refused ranges,
    `SourceAuthError` for a rejected token, `ExporterError` when Kafka cannot be read. A sink
    that is fenced at start is reported in the job's report (exit 4), not raised.
    """
    length = cfg.periods.length
    check_range(opts, length)
    require_token(cfg)
    check_team(cfg, clock)
    live_id, instance = resolve_ids(cfg, opts.transactional_id)
    codec = build_codec(cfg)
    live_end = read_live_checkpoint(cfg, clock, live_id)
    mine = read_backfill_checkpoint(cfg, codec, clock, instance)
    start = opts.start
    resumed = None
    if mine is not None and mine.resumes(opts.start, opts.end):
        start = resumed = mine.end
        log.info("resuming", extra={"from": iso(start), "instance": instance})
    periods = list(iter_periods(start, opts.end, length))
    # A shard backfills its own clusters: the others' manifests are other shards' business.
    published = {key: pub for key, pub in read_published(cfg, codec, clock).items()
                 if cfg.shard.owns(key[1])}
    retention = build_retention(cfg, clock)
    plans = plan_periods(periods, cfg=cfg, retention=retention, published=published,
                         now=clock.time(), live_end=live_end, live_id=live_id, opts=opts)
    report = Report(opts.start, opts.end, instance, opts.dry_run, retention.origin, resumed,
                    planned=len(plans))
    limit = AdaptiveLimit(cfg.backfill.max_concurrency)

    def on_request(what: str, status: int | None, seconds: float) -> None:
        if status == 429:
            limit.throttled()

    source = StepSource(sysdig_at_step(cfg, clock, on_request), {p.period: p.step for p in plans})
    pipeline: Pipeline = build_pipeline(cfg, clock, source=source)
    sink: PeriodSink | None = None
    if not opts.dry_run:
        # The one publication policy of the worker too: retries, and an in-doubt commit settled
        # on the backfill's own checkpoint before anything is published again.
        sink = ExactlyOnceSink(
            RangeCheckpointSink(sink_factory(cfg, clock, instance), opts.start, opts.end),
            build_checkpoints(cfg, clock, transactional_id=instance), clock)
        try:
            sink.start()
        except FencedError as exc:
            report.error = exc
        except BaseException:
            sink.close()
            raise
    # A resumed run finishes its range even when what is left is unchanged (see `Backfill`).
    committed = mine.end if mine is not None and resumed is not None else None
    runner = Backfill(pipeline, plans, clock, cfg, sink=sink, instance=instance, force=opts.force,
                      limit=limit, progress=progress, committed=committed)
    return BackfillJob(runner, report, sink)


def backfill(cfg: Config, opts: Options, clock: Clock, *, sink_factory: SinkFactory = default_sink,
             progress: ProgressView | None = None) -> Report:
    """`prepare` and run a backfill; the report says what happened (and its `exit_code`)."""
    return prepare(cfg, opts, clock, sink_factory=sink_factory, progress=progress).run()

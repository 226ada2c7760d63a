"""The long-running worker: exports every closed period once, in order, one transaction each.

Which periods to export comes from the checkpoint, never from the time a run fires: the next
period starts where the last committed one ended. Without a checkpoint the worker starts at
`periods.start` when configured, otherwise at the last closed period (no implicit history).

APScheduler only *wakes* the worker, on period boundaries plus the settle delay; the export
itself runs on one dedicated thread, so a late or coalesced wake-up simply finds more closed
periods and catches up in bounded batches.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from exporter.clock import Clock
from exporter.completeness import MissingClusters, remembered
from exporter.config import PeriodsConfig, WorkerConfig
from exporter.errors import (
    ExporterError,
    FencedError,
    IncompleteDataError,
    RetentionError,
    RetryableError,
    SinkError,
)
from exporter.health import HealthState
from exporter.metrics import Metrics
from exporter.periods import Period, align_down, closed_periods, format_duration, iso
from exporter.pipeline import PeriodSummary
from exporter.publication import ExactlyOnceSink
from exporter.sink import CheckpointStore, PeriodSink
from exporter.source import UsageSource

log = logging.getLogger("exporter.worker")

_POLL_SECONDS = 0.2  # how often a waiting `serve` looks at the export thread


class ExportPipeline(Protocol):
    """What the worker needs of `exporter.pipeline.Pipeline`."""

    @property
    def source(self) -> UsageSource:
        ...

    def export(self, period: Period, sink: PeriodSink, instance: str, *,
               published: Mapping[str, int] | None = None,
               claims: Mapping[str, int] | None = None) -> PeriodSummary:
        """Measure `period` chunk by chunk, expecting the `published` clusters (cluster -> end
        of the last period that carried it) and claim series of the `claims` clusters, and
        publish it with the checkpoint in one transaction; all or nothing. Raises
        `IncompleteDataError`, source and sink errors."""
        ...


class Scheduler(Protocol):
    """The part of an APScheduler 3.x scheduler the worker drives."""

    def start(self) -> None:
        ...

    def shutdown(self, wait: bool = True) -> None:
        ...


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one `export_due` run did.

    `exported` are the periods committed, in order. `held` is the period that stopped the batch
    (not committed, retried on the next run) and `error` why. `more_due` is true when closed
    periods remain after this run (batch limit reached, or a stop was requested).
    """

    exported: tuple[Period, ...] = ()
    held: Period | None = None
    error: ExporterError | None = None
    more_due: bool = False


def first_fire_time(now: float, length: int, settle: int) -> datetime:
    """The first wake-up at or after `now`: a period boundary plus the settle delay (UTC)."""
    at = align_down(int(now) - settle, length) + settle
    if at < now:
        at += length
    return datetime.fromtimestamp(at, tz=UTC)


def build_trigger(clock: Clock, periods: PeriodsConfig) -> Any:
    """An `IntervalTrigger` of `periods.length` firing at boundaries plus `settle_delay`."""
    from apscheduler.triggers.interval import IntervalTrigger

    start = first_fire_time(clock.time(), periods.length, periods.settle_delay)
    return IntervalTrigger(seconds=periods.length, start_date=start, timezone=UTC)


def build_scheduler(wake: Callable[[], None], clock: Clock, periods: PeriodsConfig) -> Any:
    """A BackgroundScheduler whose only job calls `wake` on every period boundary + settle."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone=UTC)
    # A wake-up is idempotent and cheap: missed ones coalesce and are never dropped as late.
    scheduler.add_job(wake, build_trigger(clock, periods), id="chargeback-export",
                      coalesce=True, max_instances=1, misfire_grace_time=None)
    return scheduler


class Worker:
    """Exports closed periods from the checkpoint on, one transaction per period."""

    def __init__(
        self,
        pipeline: ExportPipeline,
        sink: PeriodSink,
        checkpoints: CheckpointStore,
        clock: Clock,
        periods_cfg: PeriodsConfig,
        worker_cfg: WorkerConfig,
        metrics: Metrics,
        instance: str,
        health_state: HealthState,
        *,
        clusters: Sequence[str] = (),
        retired_clusters: Sequence[str] = (),
        owns: Callable[[str], bool] | None = None,
        preflight: Callable[[], None] | None = None,
    ) -> None:
        self._pipeline = pipeline
        # Every publication goes through the one exactly-once policy (retries, in-doubt commits).
        self._sink = ExactlyOnceSink(sink, checkpoints, clock)
        self._checkpoints = checkpoints
        self._clock = clock
        self._periods = periods_cfg
        self._cfg = worker_cfg
        self._metrics = metrics
        self._instance = instance
        self._health = health_state
        self._next: int | None = None
        # Clusters published so far (from the checkpoint) -> end of the last period with each.
        self._published: dict[str, int] = {}
        # Clusters whose claims were billed (from the checkpoint) -> end of the last such period.
        self._claims: dict[str, int] = {}
        self._configured = tuple(clusters)
        self._preflight = preflight
        self._retired = tuple(retired_clusters)
        # The shard's clusters (`ShardConfig.owns`): a cluster its checkpoint remembers but that
        # moved to another shard is that shard's to expect, no longer this one's.
        self._owns = owns
        self._flagged: set[tuple[str, str]] = set()  # (cluster, what) set to 1 in cluster_missing
        self._held: tuple[Period, str] | None = None
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._fatal: ExporterError | None = None
        self._started = threading.Event()
        self._stopped_early = False  # a stop ended the run before its work was done
        self._closed = False
        metrics.export_lag.set_function(self._lag)
        metrics.held_period_age.set_function(self._held_age)

    # --- state ------------------------------------------------------------------------------

    @property
    def next_period_start(self) -> int | None:
        """Start (epoch seconds) of the next period to export; None before `start()`."""
        return self._next

    def _lag(self) -> float:
        lag = self._health.lag()
        return float("nan") if lag is None else lag

    def _held_age(self) -> float:
        held = self._held
        return 0.0 if held is None else max(0.0, self._clock.time() - held[0].end)

    def _own(self, clusters: dict[str, int]) -> dict[str, int]:
        """`clusters` without those of another shard now (logged once, at start)."""
        if self._owns is None:
            return clusters
        moved = sorted(c for c in clusters if not self._owns(c))
        if moved:
            log.warning("clusters of the checkpoint now belong to another shard", extra={
                "instance": self._instance, "clusters": moved})
        return {c: end for c, end in clusters.items() if c not in moved}

    def _expected_count(self) -> int:
        return len(set(self._configured).union(self._published).difference(self._retired))

    def start(self) -> None:
        """Start the sink, then read the checkpoint (read_committed) to find the next period.

        Blocking. Raises what `PeriodSink.start`, the `preflight` check and `CheckpointStore.read`
        raise, and
        `ExporterError` when the checkpoint is not aligned to `periods.length`.
        """
        self._sink.start()
        if self._preflight is not None:
            self._preflight()
        self._health.sink_started()
        state = self._checkpoints.read()
        length = self._periods.length
        if state is not None:
            last = state.last_period_end
            self._published = self._own(remembered(state.clusters, (), last, self._retired))
            self._claims = {c: end for c, end in state.claims.items()
                            if self._owns is None or self._owns(c)}
            if last % length:
                raise ExporterError(
                    f"checkpoint {iso(last)} of instance {self._instance} is not aligned to "
                    f"periods.length {format_duration(length)}; was the period length changed?"
                )
            self._next = last
            self._health.committed(last)
            self._metrics.last_closed_period_end.set(last)
            origin = "checkpoint"
        elif self._periods.start is not None:
            self._next = self._periods.start
            origin = "periods.start"
        else:
            # No implicit history: the first export is the most recent closed period.
            newest_end = align_down(int(self._clock.time()) - self._periods.settle_delay, length)
            self._next = newest_end - length
            origin = "last closed period"
        self._metrics.expected_clusters.set(self._expected_count())
        log.info("worker started", extra={"instance": self._instance, "next_period_start": iso(self._next),
                                          "from": origin, "clusters": sorted(self._published)})
        self._started.set()

    # --- exporting ----------------------------------------------------------------------------

    def due(self, limit: int | None = None) -> list[Period]:
        """Closed periods from the next one on, in order, at most `limit` of them."""
        if self._next is None:
            raise ExporterError("worker used before start()")
        periods = closed_periods(self._next, self._clock.time(), self._periods.length,
                                 self._periods.settle_delay)
        return list(periods if limit is None else itertools.islice(periods, limit))

    def export_due(self) -> BatchOutcome:
        """Export the closed periods that are due, at most `worker.max_batch_periods`, in order.

        Blocking; one export at a time. Each period is computed and published in its own
        transaction and the next period advances only after its commit. Incomplete data and
        retryable failures (after retries) stop the batch without advancing and are reported in
        the outcome. Raises `FencedError` (this instance must stop), other `SinkError`s (the
        producer is unusable) and `RetentionError` (the period's data is gone at Sysdig).
        """
        with self._busy:
            limit = self._cfg.max_batch_periods
            due = self.due(limit + 1)
            exported: list[Period] = []
            for period in due[:limit]:
                if self._stopping.is_set():
                    return BatchOutcome(tuple(exported), more_due=True)
                try:
                    self._export(period)
                except IncompleteDataError as exc:
                    self._hold(period, "incomplete", exc)
                    return BatchOutcome(tuple(exported), period, exc, more_due=True)
                except RetryableError as exc:
                    self._hold(period, "unavailable", exc)
                    return BatchOutcome(tuple(exported), period, exc, more_due=True)
                except (SinkError, RetentionError) as exc:
                    reason = ("fenced" if isinstance(exc, FencedError)
                              else "retention" if isinstance(exc, RetentionError) else "sink")
                    self._metrics.period_failures.labels(reason).inc()
                    if isinstance(exc, SinkError):
                        self._health.sink_stopped()
                    log.error("worker stopping", extra={"period": str(period), "error": str(exc)})
                    raise
                except ExporterError as exc:
                    # Source and encoding errors: held and retried next run, loudly.
                    self._hold(period, "error", exc)
                    return BatchOutcome(tuple(exported), period, exc, more_due=True)
                exported.append(period)
            return BatchOutcome(tuple(exported), more_due=len(due) > limit)

    def export_all(self) -> list[Period]:
        """Run `export_due` until no closed period is left (or a stop was requested).

        Raises the error that held a period, so a one-shot run fails loudly.
        """
        exported: list[Period] = []
        while True:
            outcome = self.export_due()
            exported.extend(outcome.exported)
            if outcome.error is not None:
                raise outcome.error
            if not outcome.more_due or self._stopping.is_set():
                return exported

    def _hold(self, period: Period, reason: str, exc: ExporterError) -> None:
        m = self._metrics
        m.period_failures.labels(reason).inc()
        if self._held is not None and self._held[1] != reason:
            m.period_held.labels(self._held[1]).set(0)
        self._held = (period, reason)
        m.period_held.labels(reason).set(1)
        missing = exc.missing if isinstance(exc, MissingClusters) else {}
        self._flag_missing({(c, what) for c, lacks in missing.items() for what in lacks})
        log.warning("period held for retry", extra={
            "period": str(period), "period_start": period.start, "period_end": period.end,
            "reason": reason, "error": str(exc),
            **({"missing_clusters": sorted(missing)} if missing else {}),
        })

    def _flag_missing(self, flags: set[tuple[str, str]]) -> None:
        """Set `chargeback_cluster_missing` to 1 for `flags` and back to 0 for the others."""
        for cluster, what in self._flagged - flags:
            self._metrics.cluster_missing.labels(cluster, what).set(0)
        for cluster, what in flags:
            self._metrics.cluster_missing.labels(cluster, what).set(1)
        self._flagged = flags

    def _released(self) -> None:
        """A period was committed: nothing is held any more."""
        if self._held is not None:
            self._metrics.period_held.labels(self._held[1]).set(0)
            self._held = None
        self._flag_missing(set())

    def _check_retention(self, period: Period) -> int:
        # The source's retention model (exporter.sysdig.retention) picks the step, or refuses.
        try:
            step = self._pipeline.source.step_for(period)
        except RetentionError as exc:
            raise RetentionError(f"{exc}. Move periods.start or the checkpoint forward") from None
        age = int(self._clock.time()) - period.start
        if step > self._periods.resolution:
            self._metrics.coarse_periods.labels(str(step)).inc()
            log.warning("period older than the retention of the configured resolution", extra={
                "period": str(period), "resolution_seconds": self._periods.resolution,
                "step_seconds": step, "age_seconds": age,
            })
        return step

    def _export(self, period: Period) -> None:
        began = self._clock.time()
        step = self._check_retention(period)
        # Measured, built and produced chunk by chunk inside the period's one transaction.
        result = self._pipeline.export(period, self._sink, self._instance,
                                       published=self._published, claims=self._claims)
        assert result.clusters is not None and result.claims is not None
        self._next = period.end
        self._published = remembered(result.clusters, (), period.end, self._retired)
        self._claims = dict(result.claims)
        self._released()
        done = self._clock.time()
        self._health.committed(period.end)
        m = self._metrics
        m.expected_clusters.set(self._expected_count())
        m.periods_exported.labels("live").inc()
        m.records_produced.labels("live").inc(result.records)
        m.last_closed_period_end.set(period.end)
        m.period_duration.observe(max(0.0, done - began))
        for cluster, cov in result.coverage.items():
            for kc in cov.keys:
                m.unallocated_share.labels(cluster, kc.org_key, kc.resource).set(
                    float(kc.unallocated_share + kc.invalid_share))
        log.info("period exported", extra={
            "period": str(period), "period_start": period.start, "period_end": period.end,
            "records": result.records, "manifests": len(result.manifests),
            "status": result.status, "step_seconds": step,
            # Measuring, building and publishing overlap (chunk by chunk): one duration.
            "export_seconds": round(done - began, 3),
        })

    # --- service ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the export thread to run `export_due` (non-blocking; wake-ups coalesce)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Stop after the in-flight period (safe from a signal handler; non-blocking)."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                outcome = self.export_due()
            except ExporterError as exc:
                self._fatal = exc
                self._stopping.set()
                return
            except Exception as exc:
                log.exception("unexpected error in the export loop")
                self._fatal = ExporterError(f"worker: unexpected {type(exc).__name__}: {exc}")
                self._stopping.set()
                return
            if outcome.more_due and outcome.error is None:
                # Catch-up: a full batch is followed at once by the next one, not an interval later.
                self._wake.set()

    def serve(self, scheduler: Scheduler | None = None) -> int:
        """Start, catch up at once, then export on every wake-up until `request_stop`.

        Blocking, see `_supervise`: the calling thread only waits, so a stop is taken at once
        whatever the worker is blocked on. Scheduling begins once the worker has started and
        ends at the stop. Returns 0 after a stop; a fatal error (fenced, producer unusable,
        retention, or a start that failed) is raised after the same clean-up.
        """
        sched: Scheduler | None = None

        def body() -> None:
            self.start()
            self.wake()
            self._loop()

        def started() -> None:
            nonlocal sched
            sched = scheduler if scheduler is not None else build_scheduler(
                self.wake, self._clock, self._periods)
            sched.start()

        try:
            self._supervise(body, on_started=started)
        finally:
            if sched is not None:
                sched.shutdown(wait=False)
        self._finish()
        return 0

    def run_once(self) -> list[Period]:
        """Start, then export every closed period (`export_all`), the way `serve` runs.

        Returns the periods committed, fewer when a stop was requested; raises what
        `start` or `export_all` raised, after the clean-up.
        """
        exported: list[Period] = []

        def body() -> None:
            self.start()
            exported.extend(self.export_all())

        self._supervise(body)
        if self._fatal is not None:
            raise self._fatal
        if self._stopped_early:
            self._finish()
        return exported

    @property
    def stopped_early(self) -> bool:
        """Whether a stop was requested before the run's work was done."""
        return self._stopped_early

    def _finish(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        nxt = None if self._next is None else iso(self._next)
        log.info("worker stopped", extra={"next_period_start": nxt})

    def _supervise(self, body: Callable[[], None],
                   on_started: Callable[[], None] | None = None) -> None:
        """Run `body` on the export thread while the calling thread only waits for it.

        `on_started` runs on the calling thread once `start()` has succeeded. A stop requested
        before the worker has started ends the wait at once: nothing can be in flight, and the
        start still blocked on Sysdig or Kafka is abandoned with its thread. Once the worker
        has started, the period in flight gets `worker.shutdown_grace` seconds to commit or
        abort. Then the sink is closed (aborting a transaction still open) and `body`'s error,
        if any, is kept in `_fatal`.
        """
        if self._stopping.is_set():
            self._stopped_early = True
            self.close()
            return
        thread = threading.Thread(target=self._guard, args=(body,), name="chargeback-export",
                                  daemon=True)
        thread.start()
        grace: float = self._cfg.shutdown_grace
        try:
            # Bounded joins, not an event: a signal handler runs between them at once, and the
            # handler may set events itself.
            while thread.is_alive() and not self._stopping.is_set():
                thread.join(_POLL_SECONDS)
                if on_started is not None and self._started.is_set():
                    on_started()
                    on_started = None
        except KeyboardInterrupt:
            grace = 0  # a second interrupt: do not wait for the period in flight
            raise
        finally:
            self._stopped_early = self._stopping.is_set()
            self.request_stop()
            if self._started.is_set():
                thread.join(grace)
                if thread.is_alive():
                    log.warning("in-flight period did not finish within the shutdown grace; "
                                "aborting it", extra={"shutdown_grace_seconds": self._cfg.shutdown_grace})
            elif thread.is_alive():
                log.info("start abandoned at the stop")
            self.close()

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except ExporterError as exc:
            self._fatal = exc
        except Exception as exc:
            log.exception("unexpected error in the export thread")
            self._fatal = ExporterError(f"worker: unexpected {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Close the sink (an open transaction is aborted). Idempotent."""
        if not self._closed:
            self._closed = True
            self._health.sink_stopped()
            self._sink.close()

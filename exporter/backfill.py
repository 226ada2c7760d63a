"""Subcommand `backfill`: (re)publish a past range of periods, with corrections.

    chargeback-exporter backfill --from T1 --to T2 [--config.file F] [--force] [--dry-run]
        [--allow-coarse] [--max-age D | --allow-old] [--transactional-id ID]
        [--format table|json]

Every period of `[T1, T2)` is measured with the live worker's `Pipeline` and compared with what
was published before, read from the compacted manifests topic (ADR 0002): a period-cluster whose
content hash is unchanged is skipped (republished byte-identically with `--force`), a changed
one is republished with `revision + 1` and a new manifest, a never-published one gets revision
0. Each period is one Kafka transaction under the backfill's own transactional id, carrying the
backfill's own checkpoint, so an interrupted backfill resumes where it stopped and the live
checkpoint is never touched. docs/backfill.md is the operator's guide.

Exit codes: 0 done, 2 usage, configuration or refused range, 3 partial (some periods failed or
the run stopped early; run the same command again to resume), 4 fenced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from exporter.clock import Clock
from exporter.commands import add_common, check_team, config_from_args
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
    TopicMissing,
)
from exporter.kafka_sink import ReadMessage, read_topic
from exporter.model import PeriodUsage
from exporter.periods import Period, format_duration, iso, iter_periods, parse_duration, parse_time
from exporter.pipeline import PeriodResult, Pipeline, Prior
from exporter.publication import ExactlyOnceSink
from exporter.retention import Pinned, Retention
from exporter.retry import call_with_retries
from exporter.sink import OutMessage, PeriodSink
from exporter.source import UsageSource
from exporter.stopping import stop_on_signals
from exporter.units import CALCULATION_VERSION, method_step
from exporter.wiring import (
    build_checkpoints,
    build_codec,
    build_pipeline,
    build_retention,
    build_sink,
    build_source,
)

log = logging.getLogger("exporter.backfill")

SUFFIX = "-backfill"
FROM_HEADER = "backfill_from"
TO_HEADER = "backfill_to"
"""Headers of the backfill's checkpoint message: the range it belongs to (epoch seconds, ASCII)."""



class BackfillRefused(ConfigError):
    """The range cannot be backfilled as asked (exit 2); the message says which flag allows it."""


class BackfillFailed(ExporterError):
    """Some periods were not done (exit 3); running the same command again resumes."""

    exit_code = 3


# --------------------------------------------------------------------------------------------
# Options and identities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """What to backfill and how; times are epoch seconds aligned to `periods.length`."""

    start: int
    end: int
    force: bool = False
    dry_run: bool = False
    allow_coarse: bool = False
    max_age: int | None = None
    allow_old: bool = False
    transactional_id: str | None = None


def resolve_ids(cfg: Config, flag: str | None = None) -> tuple[str, str]:
    """(live worker's transactional id, backfill's transactional id).

    The live id is `kafka.transactional_id` without a trailing `-backfill` (the Helm Job sets
    `CHARGEBACK_KAFKA__TRANSACTIONAL_ID=<id>-backfill`). The backfill id is `--transactional-id`,
    else `backfill.transactional_id`, else `<live id>-backfill`; never the live one, which would
    fence the worker. Raises `ConfigError`.
    """
    live = cfg.kafka.transactional_id.removesuffix(SUFFIX)
    if not live:
        raise ConfigError(f"kafka.transactional_id: {cfg.kafka.transactional_id!r} leaves no live id")
    own = (flag or "").strip() or cfg.backfill.transactional_id or live + SUFFIX
    if own == live:
        raise ConfigError(
            f"backfill: transactional id {own!r} is the live worker's; the two would fence each "
            "other (leave backfill.transactional_id unset to use <id>-backfill)"
        )
    return live, own


# --------------------------------------------------------------------------------------------
# State read back from Kafka
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """The last manifest published for a (period, cluster)."""

    revision: int
    content_hash: str
    method: str

    @property
    def prior(self) -> Prior:
        return Prior(self.revision, self.content_hash)


@dataclass(frozen=True, slots=True)
class BackfillCheckpoint:
    """The backfill's own checkpoint: the end of its done prefix, and the range it was run for."""

    end: int
    start: int | None
    stop: int | None

    def resumes(self, start: int, end: int) -> bool:
        """Whether a backfill of `[start, end)` continues from here (same range, inside it)."""
        return (self.start, self.stop) == (start, end) and start < self.end < end


def _missing_topic(exc: SinkError) -> bool:
    return isinstance(exc, TopicMissing)


def read_all(cfg: Config, topic: str, clock: Clock) -> list[ReadMessage]:
    """Every committed message of `topic` (none when the topic does not exist yet)."""

    def once() -> list[ReadMessage]:
        try:
            return list(read_topic(cfg.kafka, topic, clock=clock))
        except SinkError as exc:
            if _missing_topic(exc):
                return []
            raise

    return call_with_retries(once, clock=clock, attempts=5, max_delay=120, what=f"kafka {topic}")


def read_published(cfg: Config, codec: Any, clock: Clock) -> dict[tuple[Period, str], Published]:
    """(period, cluster) -> the last manifest per `manifest_id` in the manifests topic.

    Messages of one `manifest_id` share a key, hence a partition, so offset order is publication
    order; a tombstone (null value) forgets the id.
    """
    last: dict[bytes, tuple[Period, str, Published]] = {}
    for m in read_all(cfg, cfg.kafka.topics.manifests, clock):
        key = m.key or b""
        if m.value is None:
            last.pop(key, None)
            continue
        man = codec.decode_manifest(m.value)
        last[key] = (man.period, man.cluster, Published(man.revision, man.content_hash, man.method))
    return {(p, c): pub for p, c, pub in last.values()}


def read_backfill_checkpoint(cfg: Config, codec: Any, clock: Clock,
                             instance: str) -> BackfillCheckpoint | None:
    """The backfill's checkpoint (key = its transactional id), or None if it never committed."""
    found: BackfillCheckpoint | None = None
    key = instance.encode()
    for m in read_all(cfg, cfg.kafka.topics.checkpoint, clock):
        if m.key != key:
            continue
        if m.value is None:
            found = None
            continue
        found = BackfillCheckpoint(codec.decode_checkpoint(m.value).last_period_end,
                                   _int_header(m, FROM_HEADER),
                                   _int_header(m, TO_HEADER))
    return found


def _int_header(m: ReadMessage, name: str) -> int | None:
    raw = m.headers.get(name)
    try:
        return int(raw.decode("ascii")) if raw is not None else None
    except (UnicodeDecodeError, ValueError):
        return None


def read_live_checkpoint(cfg: Config, clock: Clock, live_id: str) -> int | None:
    """The live worker's committed `last_period_end`, or None (no checkpoint, or no topic yet)."""
    try:
        state = build_checkpoints(cfg, clock, transactional_id=live_id).read()
    except SinkError as exc:
        if _missing_topic(exc):
            return None
        raise
    return None if state is None else state.last_period_end


class RangeCheckpointSink:
    """A `PeriodSink` that tags each checkpoint with the backfill's range (for resumption)."""

    def __init__(self, sink: PeriodSink, start: int, end: int) -> None:
        self._sink = sink
        self._headers = ((FROM_HEADER, str(start).encode()), (TO_HEADER, str(end).encode()))

    def start(self) -> None:
        self._sink.start()

    def publish(self, messages: Sequence[OutMessage], checkpoint: OutMessage) -> None:
        tagged = dataclasses.replace(checkpoint, headers=(*checkpoint.headers, *self._headers))
        self._sink.publish(messages, tagged)

    def recover(self) -> None:
        self._sink.recover()

    def close(self) -> None:
        self._sink.close()


# --------------------------------------------------------------------------------------------
# Planning: what to measure, at which step, and what is refused
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodPlan:
    """One period to backfill: the step it is measured at and what was published before."""

    period: Period
    step: int
    available_step: int
    prior: Mapping[str, Prior]
    coarse: bool = False


def _first(items: Sequence[Period]) -> str:
    more = f" and {len(items) - 1} more" if len(items) > 1 else ""
    return f"{items[0]}{more}"


def plan_periods(
    periods: Sequence[Period],
    *,
    cfg: Config,
    retention: Retention,
    published: Mapping[tuple[Period, str], Published],
    now: float,
    live_end: int | None,
    live_id: str,
    opts: Options,
) -> list[PeriodPlan]:
    """The plan for `periods`, or `BackfillRefused` naming the first offending period.

    Refused: periods the live worker has not committed yet (they are its to publish); periods
    not closed yet; periods older than the age guard without `--allow-old`; periods beyond every
    retention window of `retention`; periods only available at a step coarser than the period (or not dividing
    it) without `--allow-coarse`; published periods whose calculation method can no longer be
    reproduced (rolled up since, or another grain), since new record ids would double count.
    """
    length = cfg.periods.length
    settle = cfg.periods.settle_delay
    if live_end is not None and opts.end > live_end:
        raise BackfillRefused(
            f"--to {iso(opts.end)} is after the live worker's checkpoint {iso(live_end)} "
            f"(instance {live_id}); periods from {iso(live_end)} on are the live worker's to "
            "publish, end the backfill there"
        )
    if opts.end + settle > now:
        last = int(now) - settle
        raise BackfillRefused(
            f"--to {iso(opts.end)}: the period ending there is not closed yet; the last closed "
            f"period ends at {iso(last - last % length)} (periods.settle_delay "
            f"{format_duration(settle)})"
        )
    max_age = cfg.backfill.max_age if opts.max_age is None else opts.max_age
    if not opts.allow_old:
        old = [p for p in periods if now - p.start > max_age]
        if old:
            raise BackfillRefused(
                f"{len(old)} period(s) older than the age guard {format_duration(max_age)} "
                f"(first: {_first(old)}); billing platforms drop events older than their dedupe "
                "window: pass --allow-old to backfill them anyway, or --max-age"
            )
    by_period: dict[Period, dict[str, Published]] = {}
    for (pp, cluster), pub in published.items():
        by_period.setdefault(pp, {})[cluster] = pub
    plans: list[PeriodPlan] = []
    coarse: list[Period] = []
    gone: list[Period] = []
    for p in periods:
        available = retention.available_step(p)
        if available is None:
            gone.append(p)
            continue
        is_coarse = available > length or length % available != 0
        if is_coarse:
            coarse.append(p)
        step = length if is_coarse else available
        before = by_period.get(p, {})
        # Records keep the step they were published at while Sysdig still holds it, so unchanged
        # data re-measures identically; a coarser step only with --allow-coarse (same record ids,
        # the method shows the step).
        allow_coarse = opts.allow_coarse or cfg.backfill.allow_coarse
        pinned: set[int] = set()
        for cluster, pub in sorted(before.items()):
            was = method_step(pub.method, cfg.periods.grain)
            if was is None:
                raise BackfillRefused(
                    f"period {p} cluster {cluster} was published with method {pub.method}, which "
                    f"this configuration (grain {cfg.periods.grain}, {CALCULATION_VERSION}) does not "
                    "compute; its records would get new ids and be counted twice"
                )
            if was < step and not allow_coarse:
                raise BackfillRefused(
                    f"period {p} cluster {cluster} was published at {format_duration(was)} steps "
                    f"but Sysdig keeps it only at {format_duration(available)} now; pass "
                    "--allow-coarse to re-measure it at that step (a correction with the same "
                    "record ids whose method shows the coarser step)"
                )
            pinned.add(max(was, step))
        if len(pinned) > 1:
            raise BackfillRefused(
                f"period {p} was published at different steps per cluster "
                f"({', '.join(format_duration(x) for x in sorted(pinned))}); back it up per cluster "
                "with sysdig.clusters"
            )
        step = pinned.pop() if pinned else step
        prior = {cluster: pub.prior for cluster, pub in before.items()}
        plans.append(PeriodPlan(p, step, available, prior, is_coarse))
    if gone:
        raise BackfillRefused(
            f"{len(gone)} period(s) beyond Sysdig's retention (first: {_first(gone)}); their "
            "usage can no longer be measured"
        )
    if coarse and not (opts.allow_coarse or cfg.backfill.allow_coarse):
        first = retention.available_step(coarse[0]) or 0
        raise BackfillRefused(
            f"{len(coarse)} period(s) only available at {format_duration(first)} steps, too "
            f"coarse for periods.length {format_duration(length)} (first: {_first(coarse)}); pass "
            f"--allow-coarse to measure each as one {format_duration(length)} step"
        )
    return plans


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
        step = self.step_for(period)
        with self._lock:
            source = self._sources.get(step)
            if source is None:
                source = self._sources[step] = self._build(step)
        return source.fetch(period)


def sysdig_at_step(cfg: Config, clock: Clock, on_request: Any = None) -> Callable[[int], UsageSource]:
    """`build(step)` for `StepSource`: the configured Sysdig source, pinned to `step`."""

    def build(step: int) -> UsageSource:
        pinned = cfg.model_copy(update={
            "periods": cfg.periods.model_copy(update={"resolution": step})})
        return build_source(pinned, clock, on_request=on_request, retention=Pinned(step))

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
# Running: compute ahead in a bounded pool, publish in order, one transaction per period
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


class RichProgress:
    """A rich progress bar: periods done of total, records published, ETA."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("periods"),
            TextColumn("{task.fields[records]} records"), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self._task: Any = None
        self._records = 0

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("periods", total=total, records=0)

    def advance(self, outcome: PeriodOutcome) -> None:
        self._records += outcome.records
        self._progress.update(self._task, advance=1, records=self._records)

    def stop(self) -> None:
        self._progress.stop()


class LogProgress:
    """Progress as log lines, for a run without a terminal (a Kubernetes Job): one line per
    period done (`backfill period`) and, from `summary`, one for the run (`backfill summary`),
    in the configured log format. `corrections` counts the period-clusters whose records
    changed (revision + 1); `new` those published for the first time."""

    def __init__(self, dry_run: bool) -> None:
        self._dry_run = dry_run
        self._total = 0
        self._done = 0

    def start(self, total: int) -> None:
        self._total = total

    def advance(self, outcome: PeriodOutcome) -> None:
        self._done += 1
        extra: dict[str, Any] = {
            "period": str(outcome.period), "period_start": outcome.period.start,
            "period_end": outcome.period.end, "status": outcome.status, "records": outcome.records,
            "corrections": sum(1 for c in outcome.clusters if c.change == "changed"),
            "new": sum(1 for c in outcome.clusters if c.change == "new"),
            "step_seconds": outcome.step, "done": self._done, "total": self._total,
            "dry_run": self._dry_run,
        }
        if outcome.error is not None:
            extra["error"] = outcome.error
        (log.warning if outcome.status == "failed" else log.info)("backfill period", extra=extra)

    def stop(self) -> None:
        pass

    @staticmethod
    def summary(report: Report) -> None:
        """Log the run's totals as one line (the JSON report's fields without the details)."""
        doc = report_json(report)
        del doc["details"]
        doc["corrections"] = sum(1 for o in report.outcomes for c in o.clusters if c.change == "changed")
        doc["exit_code"] = report.exit_code
        (log.info if report.exit_code == 0 else log.warning)("backfill summary", extra=doc)


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


class Backfill:
    """Computes planned periods ahead in a bounded pool and publishes them in order.

    Computation (the Sysdig queries) runs on up to `backfill.max_concurrency` threads, further
    limited by an `AdaptiveLimit` that Sysdig's throttling lowers. A period whose queries keep
    failing transiently is retried, honouring Retry-After, for at most `backfill.period_timeout`
    seconds on the injected clock, then reported failed. Publication is sequential, one
    transaction per period, with the checkpoint at the end of the done prefix (a failed period
    keeps it from moving past it, so a rerun redoes it). Unchanged periods publish nothing; when
    a run that committed a checkpoint (`committed`: one already there when resuming) completes,
    a last checkpoint-only transaction moves it to the range's end, so the same command run
    again later starts afresh instead of resuming. With `sink` None nothing is published (dry
    run).
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

    def compute(self, plan: PeriodPlan) -> PeriodResult:
        """Measure one period, retrying transient failures within `backfill.period_timeout`."""
        deadline = self._clock.time() + self._cfg.period_timeout
        backoff = 1.0
        while True:
            with self.limit.slot():
                try:
                    result = self._pipeline.compute(plan.period, plan.prior)
                except RetryableError as exc:
                    failure = exc
                else:
                    self.limit.succeeded()
                    return result
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

    def _outcome(self, plan: PeriodPlan, result: PeriodResult) -> tuple[PeriodOutcome, PeriodResult | None]:
        changed = set(result.changed_clusters)
        clusters = []
        publish: set[str] = set()
        for m in result.manifests:
            before = plan.prior.get(m.cluster)
            change: Change = ("new" if before is None
                              else "changed" if m.cluster in changed else "unchanged")
            if change != "unchanged" or self._force:
                publish.add(m.cluster)
            clusters.append(ClusterChange(
                m.cluster, change, None if before is None else before.revision, m.revision,
                m.record_count, m.cluster in publish))
        seen = {c.cluster for c in clusters}
        clusters += [ClusterChange(c, "missing", p.revision, p.revision, 0, False)
                     for c, p in sorted(plan.prior.items()) if c not in seen]
        if not publish:
            return PeriodOutcome(plan.period, result.usage.step_seconds, "skipped", tuple(clusters)), None
        records = [r for r in result.records if r.cluster in publish]
        manifests = [m for m in result.manifests if m.cluster in publish]
        cpu, mem, cost = _totals(records)
        status: Status = "published" if changed & publish else "forced"
        outcome = PeriodOutcome(plan.period, result.usage.step_seconds, status, tuple(clusters),
                                len(records), cpu, mem, cost)
        return outcome, dataclasses.replace(result, records=records, manifests=manifests)

    def run(self, report: Report) -> Report:
        """Process every planned period in order; fills and returns `report`.

        Never raises `ExporterError`: a failed period is recorded and the run goes on; an error
        that makes further publication pointless (fenced, producer unusable, broker gone after
        retries, token rejected) stops the run and is kept in `report.error`.
        """
        report.planned = len(self._plans)
        prefix_end = self._plans[0].period.start if self._plans else report.start
        broken = False
        lookahead = 2 * self.limit.maximum
        self._progress.start(len(self._plans))
        pool = ThreadPoolExecutor(max_workers=self.limit.maximum, thread_name_prefix="backfill")
        pending: deque[tuple[PeriodPlan, Future[PeriodResult]]] = deque()
        todo = iter(self._plans)
        try:
            while True:
                while len(pending) < lookahead and not self._stop.is_set():
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    pending.append((nxt, pool.submit(self.compute, nxt)))
                if not pending:
                    break
                plan, future = pending.popleft()
                try:
                    result = future.result()
                    outcome, to_publish = self._outcome(plan, result)
                    if to_publish is not None and self._sink is not None:
                        self._publish(to_publish, plan.period.end if not broken else prefix_end)
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
            pool.shutdown(wait=True, cancel_futures=True)
            self._progress.stop()
        report.throttles = self.limit.throttles
        report.lowest_concurrency = self.limit.lowest
        return report

    def _publish(self, result: PeriodResult, checkpoint_end: int) -> None:
        sink = self._sink
        assert sink is not None
        self._pipeline.publish(result, sink, self._instance, checkpoint_end)
        self._committed = checkpoint_end

    def _finish(self, end: int) -> None:
        sink = self._sink
        assert sink is not None
        checkpoint = self._pipeline.codec.checkpoint(self._instance, end, self._length,
                                                     int(self._clock.time() * 1000))
        try:
            sink.publish([], checkpoint)
        except ExporterError as exc:
            # Every period is done; a rerun would only resume earlier than needed.
            log.warning("final checkpoint not committed", extra={"error": str(exc)})
            return
        self._committed = end


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _rev(c: ClusterChange) -> str:
    before = "-" if c.revision_before is None else str(c.revision_before)
    return f"{before} → {c.revision}"


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (Decimals as exact strings, times as RFC 3339)."""
    cpu, mem, cost = report.totals()
    return {
        "from": iso(report.start), "to": iso(report.end), "dry_run": report.dry_run,
        "transactional_id": report.instance, "retention": report.retention,
        "resumed_from": None if report.resumed_from is None else iso(report.resumed_from),
        **report.counts(),
        "core_hours": str(cpu), "gib_hours": str(mem),
        "cost": {k: str(v) for k, v in sorted(cost.items())},
        "throttled": report.throttles, "lowest_concurrency": report.lowest_concurrency,
        "error": None if report.error is None else str(report.error),
        "details": [
            {"period_start": iso(o.period.start), "period_end": iso(o.period.end), "status": o.status,
             "step_seconds": o.step, "records": o.records, "error": o.error,
             "clusters": [{"cluster": c.cluster, "change": c.change,
                           "revision_before": c.revision_before, "revision": c.revision,
                           "records": c.records, "published": c.published} for c in o.clusters]}
            for o in report.outcomes
        ],
    }


def details_table(report: Report) -> Table:
    """Per period and cluster: new/changed/unchanged and old → new revision."""
    verb = "would publish" if report.dry_run else "published"
    kind = "dry run " if report.dry_run else ""
    t = Table(title=f"Backfill {kind}{iso(report.start)} to {iso(report.end)}")
    for col in ("period start", "cluster", "change", "revision", "records", verb):
        t.add_column(col, justify="right" if col in ("records", "revision") else "left")
    for o in report.outcomes:
        if o.status == "failed":
            t.add_row(iso(o.period.start), "", "failed", "", "", o.error or "")
            continue
        for c in o.clusters:
            t.add_row(iso(o.period.start), c.cluster, c.change, _rev(c), str(c.records),
                      "yes" if c.published else "no")
    return t


def summary_table(report: Report) -> Table:
    """Periods, changed, skipped, failed, records and totals."""
    c = report.counts()
    cpu, mem, cost = report.totals()
    t = Table(title="Backfill summary" + (" (dry run: nothing published)" if report.dry_run else ""))
    t.add_column("")
    t.add_column("value", justify="right")
    rows = [
        ("range", f"{iso(report.start)} to {iso(report.end)}"),
        ("resumed from", iso(report.resumed_from) if report.resumed_from is not None else "-"),
        ("periods", str(c["periods"])),
        ("changed periods", str(c["changed"])),
        ("skipped (unchanged)", str(c["skipped"])),
        ("republished (--force)", str(c["forced"])),
        ("failed", str(c["failed"])),
        ("not reached", str(c["not_reached"])),
        ("records" + (" (would publish)" if report.dry_run else ""), str(c["records"])),
        ("Core-Hours", str(cpu)),
        ("GiB-Hours", str(mem)),
    ]
    rows += [(f"cost ({cur})", str(v)) for cur, v in sorted(cost.items())]
    rows += [("Sysdig throttled", f"{report.throttles} (lowest concurrency {report.lowest_concurrency})"),
             ("retention tiers", report.retention)]
    for k, v in rows:
        t.add_row(k, v)
    return t


def render(report: Report, fmt: str, out: TextIO) -> None:
    """Write the report to `out`: tables, or one JSON document."""
    if fmt == "json":
        out.write(json.dumps(report_json(report), separators=(",", ":")) + "\n")
        return
    console = Console(file=out, width=160)
    if report.dry_run or report.failed:
        console.print(details_table(report))
    console.print(summary_table(report))


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

SinkFactory = Callable[[Config, Clock, str], PeriodSink]


def default_sink(cfg: Config, clock: Clock, instance: str) -> PeriodSink:
    """The transactional Kafka sink under the backfill's own transactional id."""
    sink: PeriodSink = build_sink(cfg, clock, transactional_id=instance)
    return sink


def options_from_args(args: argparse.Namespace) -> Options:
    """Parse the flags; raises `ConfigError` with one line naming the flag."""
    try:
        start = parse_time(args.start)
    except ValueError as exc:
        raise ConfigError(f"--from: {exc}") from None
    try:
        end = parse_time(args.end)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    max_age = None
    if args.max_age is not None:
        try:
            max_age = parse_duration(args.max_age)
        except ValueError as exc:
            raise ConfigError(f"--max-age: {exc}") from None
    return Options(start=start, end=end, force=args.force, dry_run=args.dry_run,
                   allow_coarse=args.allow_coarse, max_age=max_age, allow_old=args.allow_old,
                   transactional_id=args.transactional_id)


def check_range(opts: Options, length: int) -> None:
    """A non-empty range aligned to the period length, or `ConfigError`."""
    for flag, ts in (("--from", opts.start), ("--to", opts.end)):
        if ts % length:
            raise ConfigError(f"{flag} {iso(ts)} is not aligned to periods.length {format_duration(length)}")
    if opts.end <= opts.start:
        raise ConfigError(f"--to {iso(opts.end)} must be after --from {iso(opts.start)}")


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
    published = read_published(cfg, codec, clock)
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


def cmd_backfill(args: argparse.Namespace, *, clock: Clock,
                 sink_factory: SinkFactory = default_sink, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """The `backfill` handler: exit 0, 3 (one line on stderr) or 4; raises `ConfigError` (2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    cfg = config_from_args(args)
    opts = options_from_args(args)
    logged = None if err.isatty() else LogProgress(opts.dry_run)
    progress: ProgressView = RichProgress(Console(file=err)) if logged is None else logged
    try:
        job = prepare(cfg, opts, clock, sink_factory=sink_factory, progress=progress)
    except (ConfigError, FencedError):
        raise
    except SourceAuthError as exc:
        raise ConfigError(str(exc)) from None
    except ExporterError as exc:
        raise BackfillFailed(f"{exc}; nothing was published") from None
    with stop_on_signals(job.runner):
        report = job.run()
    if logged is not None:
        logged.summary(report)
    render(report, args.format, out)
    if report.exit_code:
        print(f"chargeback-exporter backfill: error: {_failure_line(report)}", file=err)
    return report.exit_code


def _failure_line(report: Report) -> str:
    if report.error is not None and isinstance(report.error, FencedError):
        return str(report.error)
    failed = report.failed
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {report.planned} period(s) failed (first: {failed[0].period}: "
                     f"{failed[0].error})")
    if report.error is not None:
        parts.append(f"stopped: {report.error}")
    return "; ".join(parts) + "; run the same command again to resume"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backfill", help="(re)publish a past range of periods, with corrections",
        description="Measure every period of [--from, --to) again and publish new or changed "
                    "period-clusters (revision + 1), one Kafka transaction per period. "
                    "Exit 0 done, 2 refused or bad input, 3 partial (rerun to resume), 4 fenced.",
    )
    add_common(p)
    p.add_argument("--from", dest="start", required=True,
                   help="first period start, RFC 3339, aligned to periods.length (inclusive)")
    p.add_argument("--to", dest="end", required=True, help="range end, RFC 3339, aligned (exclusive)")
    p.add_argument("--force", action="store_true",
                   help="republish unchanged period-clusters too (byte-identical, same revision)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would change per period and cluster; publish nothing")
    p.add_argument("--allow-coarse", action="store_true",
                   help="measure periods Sysdig keeps only at a step coarser than the period as one step")
    age = p.add_mutually_exclusive_group()
    age.add_argument("--max-age", default=None,
                     help="refuse periods older than this (default backfill.max_age, 34d)")
    age.add_argument("--allow-old", action="store_true", help="no age guard")
    p.add_argument("--transactional-id", default=None,
                   help="the backfill's Kafka transactional id and checkpoint key "
                        "(default backfill.transactional_id, else <kafka.transactional_id>-backfill)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_backfill)

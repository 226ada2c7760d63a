"""In-memory stand-ins for the worker's collaborators: broker/sink/checkpoint store, usage source.

`MemoryBroker` keeps committed transactions; `MemorySink` is one producer on it with real
transaction semantics: a publish is all or nothing, a newer `MemorySink` that starts on the same
broker fences the older one (as `init_transactions` does), and closing a sink aborts its open
transaction. It also implements `CheckpointStore.read`, reading committed data only.

`FakeSource` measures synthetic workloads (one labelled, one not) with a per-period sample
coverage, and `MemoryPipeline` turns them into records with the real units and label-coverage
code; it has the shape of `exporter.pipeline.Pipeline` (compute + publish).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from exporter.clock import Clock
from exporter.config import OrgConfig
from exporter.coverage import label_coverage
from exporter.errors import (
    FencedError,
    IncompleteDataError,
    SinkError,
    SinkUnavailable,
    SourceUnavailable,
)
from exporter.model import PeriodUsage, PricedLine, SampleSums, WorkloadKey, WorkloadUsage
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import PeriodResult
from exporter.retention import Retention
from exporter.sink import BATCH_HEADER, CheckpointState, OutMessage, PeriodSink
from exporter.units import charge_lines

CHECKPOINT_TOPIC = "chargeback.checkpoint.v1"
RECORDS_TOPIC = "chargeback.records.v1"


def encode_checkpoint(instance: str, last_period_end: int, period_seconds: int,
                      clusters: Mapping[str, int] | None = None) -> OutMessage:
    """A JSON checkpoint message keyed by instance (the fake codec's format)."""
    body = {"instance": instance, "last_period_end": last_period_end,
            "period_seconds": period_seconds, "clusters": dict(clusters or {})}
    return OutMessage(CHECKPOINT_TOPIC, instance.encode(), json.dumps(body, sort_keys=True).encode())


def decode_checkpoint(value: bytes) -> CheckpointState:
    body = json.loads(value)
    return CheckpointState(int(body["last_period_end"]), dict(body.get("clusters", {})))


@dataclass(frozen=True)
class Transaction:
    """One committed transaction: the period's messages and its checkpoint."""

    messages: tuple[OutMessage, ...]
    checkpoint: OutMessage


class MemoryBroker:
    """Committed transactions, in commit order, shared by every `MemorySink` on it."""

    def __init__(self, decode: Callable[[bytes], CheckpointState] = decode_checkpoint) -> None:
        """`decode` reads a checkpoint value (JSON unless a codec's)."""
        self.decode = decode
        self.transactions: list[Transaction] = []
        self.epoch = 0
        self.lock = threading.Lock()

    def seed_checkpoint(self, instance: str, last_period_end: int, period_seconds: int = 3600) -> None:
        """Commit a checkpoint-only transaction, as a predecessor instance would have (JSON)."""
        with self.lock:
            self.transactions.append(
                Transaction((), encode_checkpoint(instance, last_period_end, period_seconds)))

    def checkpoint_ends(self) -> list[int]:
        """Every committed checkpoint's period end, in commit order."""
        with self.lock:
            return [self.decode(t.checkpoint.value).last_period_end for t in self.transactions]

    def committed_messages(self) -> list[OutMessage]:
        with self.lock:
            return [m for t in self.transactions for m in t.messages]


class MemorySink:
    """A `PeriodSink` and `CheckpointStore` over a `MemoryBroker`.

    Knobs: `fail_publishes` (1-based attempt numbers that fail with `SinkUnavailable`),
    `unavailable` (start/read/publish all fail), `in_transaction` (called mid-publish, before
    the commit, to hold a transaction open from a test).
    """

    def __init__(self, broker: MemoryBroker | None = None, *,
                 on_abort: Callable[[str], None] | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self.on_abort = on_abort
        self.fail_publishes: set[int] = set()
        self.unavailable = False
        self.in_transaction: Callable[[], None] | None = None
        self.attempts = 0
        self.aborts: list[str] = []
        self.started = False
        self.closed = False
        self._epoch = 0
        self._open = False
        self._lock = threading.Lock()

    def fail_nth_publish(self, n: int) -> None:
        self.fail_publishes.add(n)

    def start(self) -> None:
        if self.unavailable:
            raise SinkUnavailable("memory broker: unreachable")
        with self.broker.lock:
            self.broker.epoch += 1
            self._epoch = self.broker.epoch
        self.started, self.closed = True, False

    def publish(self, messages: Sequence[OutMessage], checkpoint: OutMessage) -> None:
        if not self.started or self.closed:
            raise SinkError("memory sink used before start() or after close()")
        with self._lock:
            self.attempts += 1
            attempt = self.attempts
            self._open = True
        staged = tuple(messages)
        try:
            if self._epoch != self.broker.epoch:
                raise FencedError("memory broker: fenced by a newer instance; stopping")
            if self.unavailable or attempt in self.fail_publishes:
                raise SinkUnavailable(f"memory broker: publish attempt {attempt} failed")
            if self.in_transaction is not None:
                self.in_transaction()
            with self._lock, self.broker.lock:
                if not self._open:
                    raise SinkError("memory sink closed during the transaction; aborted")
                if self._epoch != self.broker.epoch:
                    raise FencedError("memory broker: fenced by a newer instance; stopping")
                self.broker.transactions.append(Transaction(staged, checkpoint))
                self._open = False
        except BaseException as exc:
            self._abort(type(exc).__name__)
            raise

    def _abort(self, reason: str) -> None:
        with self._lock:
            was_open, self._open = self._open, False
        if was_open:
            self.aborts.append(reason)
            if self.on_abort is not None:
                self.on_abort(reason)

    def close(self) -> None:
        self._abort("close")
        self.closed = True

    def read(self) -> CheckpointState | None:
        if self.unavailable:
            raise SinkUnavailable("memory broker: unreachable")
        with self.broker.lock:
            last = self.broker.transactions[-1] if self.broker.transactions else None
        if last is None:
            return None
        return dataclasses.replace(self.broker.decode(last.checkpoint.value),
                                   batch=dict(last.checkpoint.headers).get(BATCH_HEADER))

    def recover(self) -> None:
        """Nothing is ever in doubt in memory."""


# --- source ---------------------------------------------------------------------------------

WORKLOADS: tuple[tuple[WorkloadKey, dict[str, str]], ...] = (
    (WorkloadKey("prod", "shop", "deployment", "web"),
     {"kube_deployment_label_costcenter": "CC-100", "kube_namespace_label_team": "shop"}),
    (WorkloadKey("prod", "tools", "deployment", "batch"), {}),
)


class FakeSource:
    """A `UsageSource` over two synthetic workloads.

    `coverage[period.start]` overrides the sample coverage (default 1); `unavailable` lists
    period starts whose fetch fails with `SourceUnavailable`. `fetched` records every call.
    """

    def __init__(self, clock: Clock, resolution: int = 10) -> None:
        self._clock = clock
        # The exporter's retention model on Sysdig's documented table (no timelines to read).
        self.retention = Retention(None, clock=clock, resolution=resolution)
        self.coverage: dict[int, Decimal] = {}
        self.unavailable: set[int] = set()
        self.fetched: list[Period] = []

    def step_for(self, period: Period) -> int:
        return self.retention.step_for(period)

    def fetch(self, period: Period) -> PeriodUsage:
        self.fetched.append(period)
        if period.start in self.unavailable:
            raise SourceUnavailable(f"Sysdig (fake): unavailable for {period}")
        step = self.step_for(period)
        steps = Decimal(period.length // step)
        workloads = tuple(
            WorkloadUsage(key, labels, {
                "cpu": SampleSums(steps * Decimal("0.25"), steps * Decimal("0.5"), steps * Decimal("0.5")),
                "memory": SampleSums(steps * 2**30, steps * 2**29, steps * 2**30),
            })
            for key, labels in WORKLOADS
        )
        cov = self.coverage.get(period.start, Decimal(1))
        return PeriodUsage(period, step, "pod", workloads, {"prod": cov},
                           usage_clusters=frozenset({"prod"}), request_clusters=frozenset({"prod"}))


@dataclass
class MemoryPipeline:
    """`compute` + `publish` with the shape of `exporter.pipeline.Pipeline`, JSON-encoded."""

    source: FakeSource
    min_coverage: Decimal = Decimal("0.95")
    org: OrgModel = field(default_factory=lambda: OrgModel(OrgConfig()))
    computed: list[Period] = field(default_factory=list)

    def compute(self, period: Period, prior: Mapping[str, object] | None = None,
                published: Mapping[str, int] | None = None) -> PeriodResult:
        usage = self.source.fetch(period)
        self.computed.append(period)
        low = sorted(c for c, v in usage.coverage.items() if v < self.min_coverage)
        if low:
            raise IncompleteDataError(f"period {period}: sample coverage below {self.min_coverage} "
                                      f"for cluster(s) {', '.join(low)}; held for retry")
        lines = charge_lines(usage, self.org)
        priced = [PricedLine(ln, None, None, None) for ln in lines]
        records: list[object] = [
            {"period_start": ln.period.start, "cluster": ln.workload.cluster,
             "workload": ln.workload.name, "resource": ln.resource,
             "chargeable": str(ln.chargeable), "costcenter": ln.org.values["costcenter"],
             "method": ln.method}
            for ln in lines
        ]
        return PeriodResult(period, usage, lines, priced, records, [], label_coverage(lines))

    def publish(self, result: PeriodResult, sink: PeriodSink, instance: str,
                checkpoint_end: int | None = None,
                clusters: Mapping[str, int] | None = None) -> None:
        end = result.period.end if checkpoint_end is None else checkpoint_end
        messages = [
            OutMessage(RECORDS_TOPIC, f"{r['cluster']}/{r['workload']}/{r['resource']}".encode(),
                       json.dumps(r, sort_keys=True).encode())
            for r in result.records if isinstance(r, dict)
        ]
        sink.publish(messages, encode_checkpoint(instance, end, result.period.length, clusters))


def published_periods(broker: MemoryBroker) -> list[int]:
    """Period starts of the committed records, in commit order, one per transaction."""
    out: list[int] = []
    for t in broker.transactions:
        starts = {json.loads(m.value)["period_start"] for m in t.messages}
        assert len(starts) <= 1, "a transaction mixed periods"
        out.extend(starts)
    return out

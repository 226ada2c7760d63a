"""In-memory stand-ins for the worker's collaborators: broker/sink/checkpoint store, usage source.

`MemoryBroker` keeps committed transactions; `MemorySink` is one transactional producer on it,
held to the same contract as `KafkaPeriodSink` (tests/integration/kafka/test_period_sink_contract.py):
a publish is all or nothing; a newer `MemorySink` that starts with the same transactional id
fences the older one (as `init_transactions` does), other ids are independent; closing a sink
aborts its open transaction and is final; a commit whose answer is lost raises `CommitUncertain`.
It also implements `CheckpointStore.read`: the last committed checkpoint keyed by its id.

`FakeSource` measures synthetic workloads (one labelled, one not) with a per-period sample
coverage; worker tests feed it to the real `exporter.pipeline.Pipeline`.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from exporter.clock import Clock
from exporter.errors import (
    CommitUncertain,
    FencedError,
    SinkError,
    SinkUnavailable,
    SourceUnavailable,
)
from exporter.model import PeriodUsage, SampleSums, WorkloadKey, WorkloadUsage
from exporter.periods import Period
from exporter.sink import BATCH_HEADER, Batch, CheckpointState, OutMessage, generated
from exporter.sysdig import Retention


def decode_checkpoint(value: bytes) -> CheckpointState:
    """A JSON checkpoint (`last_period_end`, `clusters`), the contract suite's format."""
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
        """`decode` reads a checkpoint value (the codec's `decode_checkpoint` for Avro)."""
        self.decode = decode
        self.transactions: list[Transaction] = []
        # Producer epoch per transactional id: starting a sink bumps it, fencing older sinks.
        self.epochs: dict[str, int] = {}
        self.lock = threading.Lock()

    def seed(self, checkpoint: OutMessage) -> None:
        """Commit a checkpoint-only transaction, as a predecessor instance would have."""
        with self.lock:
            self.transactions.append(Transaction((), checkpoint))

    def checkpoint_ends(self) -> list[int]:
        """Every committed checkpoint's period end, in commit order."""
        with self.lock:
            return [self.decode(t.checkpoint.value).last_period_end for t in self.transactions]

    def committed_messages(self, topic: str | None = None) -> list[OutMessage]:
        """What a `read_committed` reader sees: of `topic` (checkpoints included), or every
        record and manifest."""
        with self.lock:
            if topic is None:
                return [m for t in self.transactions for m in t.messages]
            return [m for t in self.transactions for m in (*t.messages, t.checkpoint)
                    if m.topic == topic]


class MemorySink:
    """A `PeriodSink` and `CheckpointStore` over a `MemoryBroker`, as `transactional_id`.

    Knobs: `fail_publishes` (1-based attempt numbers that fail with `SinkUnavailable`),
    `lost_answers` (attempt number -> whether that commit landed; it raises `CommitUncertain`),
    `unavailable` (start/read/publish all fail), `in_transaction` (called mid-publish, before
    the commit, to hold a transaction open from a test).
    """

    def __init__(self, broker: MemoryBroker | None = None, *, transactional_id: str,
                 on_abort: Callable[[str], None] | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self.transactional_id = transactional_id
        self.on_abort = on_abort
        self.fail_publishes: set[int] = set()
        self.lost_answers: dict[int, bool] = {}
        self.unavailable = False
        self.in_transaction: Callable[[], None] | None = None
        self.attempts = 0
        self.recoveries = 0
        self.aborts: list[str] = []
        self.started = False
        self.closed = False
        self._epoch = 0
        self._open = False
        self._lock = threading.Lock()

    def fail_nth_publish(self, n: int) -> None:
        self.fail_publishes.add(n)

    def lose_commit_answer(self, n: int, *, committed: bool) -> None:
        """Publish attempt `n` commits (or not) and then raises `CommitUncertain`."""
        self.lost_answers[n] = committed

    def _fenced(self) -> bool:
        return self._epoch != self.broker.epochs.get(self.transactional_id, 0)

    def start(self) -> None:
        if self.unavailable:
            raise SinkUnavailable("memory broker: unreachable")
        with self.broker.lock:
            self._epoch = self.broker.epochs.get(self.transactional_id, 0) + 1
            self.broker.epochs[self.transactional_id] = self._epoch
        self.started, self.closed = True, False

    def publish(self, batch: Batch) -> None:
        if self.closed:
            raise SinkError("memory sink used after close()")
        if not self.started:
            raise SinkError("memory sink used before start()")
        with self._lock:
            self.attempts += 1
            attempt = self.attempts
            self._open = True
        staged: list[OutMessage] = []
        try:
            with generated(batch) as messages:
                for m in messages:
                    # As Kafka: checked on each produce, so a fenced producer stops at once.
                    if self._fenced():
                        raise FencedError("memory broker: fenced by a newer instance; stopping")
                    staged.append(m)
            checkpoint = batch.checkpoint()
            if checkpoint is None:
                if staged:
                    raise SinkError("memory broker: a batch produced messages but no checkpoint")
                with self._lock:
                    self._open = False
                return
            if self._fenced():
                raise FencedError("memory broker: fenced by a newer instance; stopping")
            if self.unavailable or attempt in self.fail_publishes:
                raise SinkUnavailable(f"memory broker: publish attempt {attempt} failed")
            if self.in_transaction is not None:
                self.in_transaction()
            lost = self.lost_answers.get(attempt)
            with self._lock, self.broker.lock:
                if not self._open:
                    raise SinkError("memory sink closed during the transaction; aborted")
                if self._fenced():
                    raise FencedError("memory broker: fenced by a newer instance; stopping")
                if lost is not False:
                    self.broker.transactions.append(Transaction(tuple(staged), checkpoint))
                self._open = False
        except BaseException as exc:
            self._abort(type(exc).__name__)
            raise
        if lost is not None:
            # No abort: a transaction that never reached the coordinator is settled (aborted)
            # by the next producer of this id, and nothing of it was ever visible.
            raise CommitUncertain(f"memory broker: commit answer of attempt {attempt} lost")

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
        key = self.transactional_id.encode()
        with self.broker.lock:
            mine = [t.checkpoint for t in self.broker.transactions if t.checkpoint.key == key]
        if not mine:
            return None
        return dataclasses.replace(self.broker.decode(mine[-1].value),
                                   batch=dict(mine[-1].headers).get(BATCH_HEADER))

    def recover(self) -> None:
        """Lost commit answers are settled as they happen here; counted for the tests."""
        if self.unavailable:
            raise SinkUnavailable("memory broker: unreachable")
        self.recoveries += 1


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
                           usage_clusters=frozenset({"prod"}), request_clusters=frozenset({"prod"}),
                           clusters=frozenset({"prod"}))

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        """One chunk: the whole period (`fetch`)."""
        yield self.fetch(period)

"""Shared machinery of the reliability tests: the exporter as a real process, and the ledger check.

`ExporterProcess` runs `python -m exporter ...` in its own process group (so `kill -9` takes the
whole group), streams its stderr JSON log lines as events that a test can wait for, and keeps
everything it printed for the secret scan.

`check_ledger` is the exactly-once verdict: it reads the three topics back with `read_committed`
and compares them with the fleet's ground truth, period by period, and it reads the records topic
again with `read_uncommitted` to count the transactions that were aborted (work that a kill or
an outage left open, which the restarted instance aborted and then redid).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from chargeback_simulator.fleet import Fleet
from exporter.avro import body_of
from exporter.clock import SystemClock
from exporter.config import Config, KafkaConfig
from exporter.kafka import KafkaCheckpointStore, client_config, read_topic
from exporter.manifests import content_hash_of_bodies
from exporter.records import BillingRecord, PeriodManifest, kubernetes_kind
from exporter.wiring import build_codec
from tests.rigs.paths import ROOT

REPO = ROOT
Q = Decimal("0.000000001")  # the records' quantity scale


def q(value: Decimal) -> Decimal:
    """Ground truth at the records' scale, rounded the way the exporter rounds."""
    return value.quantize(Q, rounding=ROUND_HALF_EVEN)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any exporter or sdcclient override, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEBACK_", "SDC_"))}
    env.update(extra)
    return env


class ExporterProcess:
    """`python -m exporter *argv` as a process group leader; stderr lines become events.

    Every stderr line is kept (`stderr_lines`); lines that parse as JSON objects are also kept
    as `events` with the monotonic time they were read. Thread-safe for one waiting test.
    """

    def __init__(self, argv: list[str], *, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *argv], cwd=REPO, env=dict(env or clean_env()),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._stdout: list[bytes] = []
        self.stderr_lines: list[str] = []
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._log = log_path.open("a", encoding="utf-8") if log_path else None
        self._readers = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self._stdout.append(raw)
                self._cond.notify_all()

    @property
    def stdout(self) -> bytes:
        with self._cond:
            return b"".join(self._stdout)

    def wait_stdout(self, needle: bytes, timeout: float = 60.0) -> bool:
        """Whether a stdout line containing `needle` appears within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(needle in line for line in self._stdout):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._readers[1].is_alive()):
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            doc: Any = None
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    doc = None
            with self._cond:
                self.stderr_lines.append(line)
                if isinstance(doc, dict):
                    self.events.append((time.monotonic(), doc))
                if self._log is not None:
                    self._log.write(line + "\n")
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], count: int = 1,
                   timeout: float = 60.0) -> tuple[float, dict[str, Any]] | None:
        """The `count`-th event matching `predicate` (time read, event), or None if the
        process ended or `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [e for e in self.events if predicate(e[1])]
                if len(hits) >= count:
                    return hits[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    return None
                self._cond.wait(min(remaining, 0.05))

    def matching(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [doc for _, doc in self.events if doc.get("event") == event]

    def kill(self) -> int:
        """SIGKILL the whole process group, reap it, and return the exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.wait(30)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for the exit (raises `subprocess.TimeoutExpired`) and for the output readers."""
        code = self.proc.wait(timeout)
        for t in self._readers:
            t.join(10)
        if self._log is not None and not self._log.closed:
            self._log.close()
        return code

    def finished(self, timeout: float) -> bool:
        """True if the process exits within `timeout` seconds (it is not killed)."""
        try:
            self.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines)


def is_event(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: doc.get("event") == name


# --- reading the topics back -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Raw:
    """One message as read from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]


def reader_kafka(cfg: Config) -> KafkaConfig:
    """`cfg.kafka` without `extra`, which holds producer settings that consumers warn about."""
    return cfg.kafka.model_copy(update={"extra": {}})


def read_committed(cfg: Config, topic: str) -> list[Raw]:
    """Every committed message of `topic` (`read_committed`, from the beginning)."""
    return [Raw(m.partition, m.offset, m.key, m.value, m.headers)
            for m in read_topic(reader_kafka(cfg), topic) if m.value is not None]


def last_checkpoint(cfg: Config) -> int | None:
    """The instance's committed checkpoint (epoch seconds), read the way the exporter reads it."""
    store = KafkaCheckpointStore(reader_kafka(cfg), build_codec(cfg).decode_checkpoint, SystemClock())
    state = store.read()
    return None if state is None else state.last_period_end


def read_uncommitted(cfg: Config, topic: str, timeout: float = 30.0) -> list[Raw]:
    """Every data message of `topic`, committed, aborted or open (`read_uncommitted`)."""
    conf = client_config(reader_kafka(cfg))
    conf.update({"group.id": f"reliability-{os.getpid()}-{time.monotonic_ns()}",
                 "isolation.level": "read_uncommitted", "enable.auto.commit": False,
                 "enable.partition.eof": True, "auto.offset.reset": "earliest",
                 "receive.message.max.bytes": 400_000_000})
    consumer = Consumer(conf)
    out: list[Raw] = []
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        parts = sorted(meta.topics[topic].partitions)
        ends = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                       cached=False)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            part = msg.partition() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    done.add(part)
                    continue
                raise AssertionError(f"reading {topic}: {err}")
            value = msg.value()
            if value is None:
                continue
            headers = {str(h[0]): (h[1] if isinstance(h[1], bytes) else b"") for h in msg.headers() or []}
            key = msg.key()
            out.append(Raw(part, msg.offset() or 0, key if isinstance(key, bytes) else None,
                           value if isinstance(value, bytes) else value.encode(), headers))
        if len(done) < len(ends):
            raise AssertionError(f"reading {topic} read_uncommitted did not reach the end")
    finally:
        consumer.close()
    return out


class RecordWatch:
    """A `read_uncommitted` consumer thread noting when each period's records reach the broker.

    Uncommitted records are visible to it as soon as the broker has them, so the first record of
    a period marks an open transaction that is being written. `seen_after(start, t)` waits for a
    record of the period starting at `start` read after monotonic time `t`.
    """

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._codec = build_codec(cfg)
        self._seen: dict[int, list[float]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        topic = self._cfg.kafka.topics.records
        conf = client_config(reader_kafka(self._cfg))
        conf.update({"group.id": f"watch-{os.getpid()}-{time.monotonic_ns()}",
                     "isolation.level": "read_uncommitted", "enable.auto.commit": False,
                     "fetch.wait.max.ms": 5, "fetch.min.bytes": 1,
                     "receive.message.max.bytes": 400_000_000})
        consumer = Consumer(conf)
        try:
            while not self._stop.is_set():
                meta = consumer.list_topics(topic, timeout=5)
                tmeta = meta.topics.get(topic)
                if tmeta is not None and tmeta.error is None and tmeta.partitions:
                    consumer.assign([TopicPartition(topic, p, 0) for p in tmeta.partitions])
                    break
                self._stop.wait(0.2)  # the exporter creates the topic on its first start
            while not self._stop.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error() is not None or msg.value() is None:
                    continue
                now = time.monotonic()
                value = msg.value()
                start = self._codec.decode_record(value if isinstance(value, bytes) else b"").period_start
                with self._cond:
                    self._seen.setdefault(start // 1000, []).append(now)
                    self._cond.notify_all()
        finally:
            consumer.close()

    def seen_after(self, period_start: int, after: float, timeout: float,
                   alive: Callable[[], bool]) -> float | None:
        """When a record of `period_start` was first read after `after`; None on timeout or
        when `alive()` turns false."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [t for t in self._seen.get(period_start, []) if t > after]
                if hits:
                    return min(hits)
                if time.monotonic() >= deadline or not alive():
                    return None
                self._cond.wait(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --- the verdict -------------------------------------------------------------------------------

RecordKey = tuple[int, str, str, str, str, str]  # period start (s), cluster, ns, kind, name, resource


@dataclass
class Ledger:
    """What the topics hold, checked against the ground truth; `problems` must be empty."""

    start: int
    end: int
    length: int
    periods: int = 0
    records: int = 0
    duplicates: int = 0
    gaps: int = 0
    extras: int = 0
    wrong_quantities: int = 0
    manifests: int = 0
    manifest_problems: int = 0
    checkpoints: list[int] = field(default_factory=list)
    aborted_transactions: int = 0
    aborted_records: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    def summary(self) -> dict[str, Any]:
        return {"periods": self.periods, "records": self.records, "duplicates": self.duplicates,
                "gaps": self.gaps, "extras": self.extras, "wrong_quantities": self.wrong_quantities,
                "manifests": self.manifests, "manifest_problems": self.manifest_problems,
                "aborted_transactions": self.aborted_transactions,
                "aborted_records": self.aborted_records}


def record_key(r: BillingRecord) -> RecordKey:
    return (r.period_start // 1000, r.cluster, r.namespace, r.workload_kind, r.workload_name,
            r.resource)


def check_ledger(cfg: Config, fleet: Fleet, start: int, end: int, *,
                 statuses: Mapping[int, str] | None = None) -> Ledger:
    """Check every period in `[start, end)` (aligned to `cfg.periods.length`) on the broker.

    Exactly once: every (period, workload, resource) of the ground truth appears in one committed
    record, nothing else does, and usage, request and chargeable equal the ground truth rounded
    to 9 decimals (ROUND_HALF_EVEN). Every (period, cluster) has one manifest whose record count,
    totals and content hash match its records. The instance's checkpoints are the period ends in
    order, each once. `statuses` gives the expected manifest status of a period (default final).
    """
    length = cfg.periods.length
    grain = cfg.periods.grain
    codec = build_codec(cfg)
    topics = cfg.kafka.topics
    ledger = Ledger(start, end, length)
    ledger.periods = (end - start) // length

    raw_records = read_committed(cfg, topics.records)
    records: list[tuple[BillingRecord, bytes]] = [(codec.decode_record(m.value), m.value)
                                                  for m in raw_records]
    ledger.records = len(records)
    seen = Counter(record_key(r) for r, _ in records)
    ledger.duplicates = sum(n - 1 for n in seen.values())
    for key, n in seen.items():
        if n > 1:
            ledger.problem(f"duplicate {key} x{n}")
    by_key = {record_key(r): r for r, _ in records}

    expected: set[RecordKey] = set()
    for p in range(start, end, length):
        truth = fleet.ground_truth(p, p + length, grain)
        for wk, per in truth.items():
            for res, sums in per.items():
                key = (p, wk.cluster, wk.namespace, kubernetes_kind(wk.kind), wk.name, res)
                expected.add(key)
                got = by_key.get(key)
                if got is None:
                    continue
                want = (q(sums.usage), q(sums.request), q(sums.chargeable))
                have = (got.usage_quantity, got.request_quantity, got.chargeable_quantity)
                if have != want:
                    ledger.wrong_quantities += 1
                    ledger.problem(f"{key}: {have} != ground truth {want}")
    missing = expected - set(seen)
    ledger.gaps = len(missing)
    for key in sorted(missing)[:5]:
        ledger.problem(f"missing {key}")
    extra = set(seen) - expected
    ledger.extras = len(extra)
    for key in sorted(extra)[:5]:
        ledger.problem(f"unexpected {key}")

    # Manifests: one per (period, cluster), consistent with the records they describe.
    bodies: dict[tuple[int, str], list[tuple[str, bytes, BillingRecord]]] = {}
    for r, value in records:
        bodies.setdefault((r.period_start // 1000, r.cluster), []).append((r.record_id, body_of(value), r))
    manifests = [codec.decode_manifest(m.value) for m in read_committed(cfg, topics.manifests)]
    ledger.manifests = len(manifests)
    per_manifest = Counter((m.period_start // 1000, m.cluster) for m in manifests)
    for pc, n in per_manifest.items():
        if n > 1:
            ledger.manifest_problems += 1
            ledger.problem(f"manifest {pc} x{n}")
    for pc in bodies:
        if pc not in per_manifest:
            ledger.manifest_problems += 1
            ledger.problem(f"no manifest for {pc}")
    for m in manifests:
        ledger.statuses[m.status] += 1
        _check_manifest(m, bodies.get((m.period_start // 1000, m.cluster), []), ledger,
                        (statuses or {}).get(m.period_start // 1000, "final"))

    # The checkpoint of this instance: each period end once, in order.
    instance = cfg.kafka.transactional_id.encode()
    ledger.checkpoints = [codec.decode_checkpoint(m.value).last_period_end
                          for m in read_committed(cfg, topics.checkpoint) if m.key == instance]
    want_cp = list(range(start + length, end + 1, length))
    if ledger.checkpoints != want_cp:
        ledger.problem(f"checkpoints {_brief(ledger.checkpoints)} != {_brief(want_cp)}")

    # Aborted work: data messages that read_uncommitted sees and read_committed does not.
    committed = {(m.partition, m.offset) for m in raw_records}
    aborted = [m for m in read_uncommitted(cfg, topics.records) if (m.partition, m.offset) not in committed]
    ledger.aborted_records = len(aborted)
    ledger.aborted_transactions = len({(codec.decode_record(m.value).period_start,
                                        m.headers.get("published_at")) for m in aborted})
    return ledger


def _check_manifest(m: PeriodManifest, recs: list[tuple[str, bytes, BillingRecord]], ledger: Ledger,
                    status: str) -> None:
    where = f"manifest ({m.period_start // 1000}, {m.cluster})"
    ordered = sorted(recs, key=lambda t: t[0])
    if m.record_count != len(ordered):
        ledger.manifest_problems += 1
        ledger.problem(f"{where}: record_count {m.record_count} != {len(ordered)} records")
    if m.content_hash != content_hash_of_bodies(b for _, b, _ in ordered):
        ledger.manifest_problems += 1
        ledger.problem(f"{where}: content_hash does not match its records")
    for total in m.totals:
        rows = [r for _, _, r in ordered if r.resource == total.resource]
        if total.chargeable_quantity != sum((r.chargeable_quantity for r in rows), Decimal(0)):
            ledger.manifest_problems += 1
            ledger.problem(f"{where}: {total.resource} chargeable total differs from its records")
    if m.status != status:
        ledger.manifest_problems += 1
        ledger.problem(f"{where}: status {m.status} != {status}")


def _brief(values: list[int]) -> str:
    if len(values) <= 6:
        return str(values)
    return f"[{values[0]}, {values[1]}, ... {values[-1]}] ({len(values)})"

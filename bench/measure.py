"""One fleet size, in one fresh process: the exporter's per-period path split into phases,
the ceilings measured on the same bytes and broker, Avro and consumer throughput, peak RSS.

Phases of a period (one Sysdig request at a time; `Pipeline.export` interleaves them chunk by
chunk, so each is the sum of its calls):
- fetch: waiting for the source's chunks (`SysdigSource.fetch_chunks`), split into HTTP
  (requests' `Session.send`: sending, waiting on the server and reading the whole body) and
  parse (everything else: sdcclient, `Response.json`, validating the series
  (`sysdig.parse_vector`), assembling `PeriodUsage`);
- compute: the rest of `Pipeline.export` (units, pricing, shared costs, label coverage,
  records and their Avro bodies, content hashes, manifests);
- encode: the codec's `records` and `manifests` (framing the bodies, headers);
- produce: `KafkaPeriodSink`'s produce calls and its commit.

The exporter's own time is the period's wall time minus the time the HTTP phase spent idle
(its wall minus its CPU), i.e. minus the time the server took to answer.
"""

from __future__ import annotations

import gc
import io
import json
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

import exporter.sysdig.source as sysdig_module
from bench.fleets import SETTLE, exporter_config, period, write_rate_card
from bench.floor import time_floor
from bench.record import Recording
from exporter.clock import FakeClock
from exporter.config import Config
from exporter.model import PeriodUsage
from exporter.periods import Period
from exporter.sink import OutMessage
from exporter.wiring import build_pipeline, build_sink, build_source

INSTANCE = "bench"


@dataclass(slots=True)
class Span:
    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0


@dataclass
class Timers:
    """Accumulates wall and CPU time of instrumented library calls, by name."""

    spans: dict[str, Span] = field(default_factory=dict)

    def reset(self) -> None:
        self.spans.clear()

    def get(self, name: str) -> Span:
        return self.spans.get(name, Span())

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                span = self.spans.setdefault(name, Span())
                span.wall += time.perf_counter() - w
                span.cpu += time.thread_time() - c
                span.calls += 1

        return timed


@contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    """Time HTTP sends, JSON decoding and series validation for the duration of the block."""
    saved = (requests.sessions.Session.send, requests.models.Response.json,
             sysdig_module.parse_vector)
    requests.sessions.Session.send = timers.wrap("http", saved[0])  # type: ignore[method-assign]
    requests.models.Response.json = timers.wrap("json", saved[1])  # type: ignore[method-assign]
    sysdig_module.parse_vector = timers.wrap("series", saved[2])
    try:
        yield
    finally:
        requests.sessions.Session.send = saved[0]  # type: ignore[method-assign]
        requests.models.Response.json = saved[1]  # type: ignore[method-assign]
        sysdig_module.parse_vector = saved[2]


class TimedSource:
    """The real usage source, with the wall and CPU time spent waiting for its chunks kept
    (`last`, since `reset`), so the period runs exactly as `Pipeline.export` runs it and fetch
    is still timed apart; `workloads`, `queries` and `bytes_fetched` add up the chunks'."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last = Span()
        self.workloads = self.queries = self.bytes_fetched = 0

    def reset(self) -> None:
        self.last = Span()
        self.workloads = self.queries = self.bytes_fetched = 0

    def fetch(self, period: Period) -> PeriodUsage:
        # Process CPU: the queries run on the source's threads.
        w, c = time.perf_counter(), time.process_time()
        try:
            usage: PeriodUsage = self.inner.fetch(period)
            return usage
        finally:
            self.last = Span(time.perf_counter() - w, time.process_time() - c, 1)

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        """The inner source's chunks; the time spent waiting for each is added to `last`."""
        chunks = self.inner.fetch_chunks(period)
        while True:
            # Process CPU: the queries run on the source's threads.
            w, c = time.perf_counter(), time.process_time()
            chunk = next(chunks, None)
            last = self.last
            self.last = Span(last.wall + time.perf_counter() - w,
                             last.cpu + time.process_time() - c, last.calls + 1)
            if chunk is None:
                return
            self.workloads += len(chunk.workloads)
            self.queries += chunk.queries
            self.bytes_fetched += chunk.bytes_fetched
            yield chunk
            del chunk

    def step_for(self, period: Period) -> int:
        step: int = self.inner.step_for(period)
        return step


@dataclass
class Rig:
    """The real exporter objects for one benchmark process."""

    cfg: Config
    clock: FakeClock
    source: TimedSource
    pipeline: Any
    sink: Any

    def close(self) -> None:
        self.sink.close()


def make_rig(url: str, bootstrap: str, tag: str, workdir: Path) -> Rig:
    cfg = exporter_config(url, bootstrap, tag, write_rate_card(workdir))
    clock = FakeClock(period(0).end + SETTLE)
    source = TimedSource(build_source(cfg, clock))
    rig = Rig(cfg, clock, source, build_pipeline(cfg, clock, source=source), build_sink(cfg, clock))
    rig.sink.start()
    return rig


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


@contextmanager
def phased(phases: Timers) -> Iterator[None]:
    """Time the codec's encoding ("encode") and the sink's produce calls and commit
    ("produce") for the duration of the block."""
    from exporter.avro.messages import AvroCodec
    from exporter.kafka import KafkaPeriodSink

    saved = (AvroCodec.records, AvroCodec.manifests, KafkaPeriodSink._produce,
             KafkaPeriodSink._commit)
    AvroCodec.records = phases.wrap("encode", saved[0])  # type: ignore[method-assign]
    AvroCodec.manifests = phases.wrap("encode", saved[1])  # type: ignore[method-assign]
    KafkaPeriodSink._produce = phases.wrap("produce", saved[2])  # type: ignore[method-assign]
    KafkaPeriodSink._commit = phases.wrap("produce", saved[3])  # type: ignore[method-assign]
    try:
        yield
    finally:
        AvroCodec.records = saved[0]  # type: ignore[method-assign]
        AvroCodec.manifests = saved[1]  # type: ignore[method-assign]
        KafkaPeriodSink._produce = saved[2]  # type: ignore[method-assign]
        KafkaPeriodSink._commit = saved[3]  # type: ignore[method-assign]


class _Counted:
    """A batch passed through, counting its messages and their bytes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.messages_count = 0
        self.bytes = 0

    def messages(self) -> Iterator[OutMessage]:
        for m in self.inner.messages():
            self.messages_count += 1
            self.bytes += len(m.value)
            yield m

    def checkpoint(self) -> OutMessage | None:
        cp: OutMessage | None = self.inner.checkpoint()
        if cp is not None:
            self.messages_count += 1
            self.bytes += len(cp.value)
        return cp


def run_period(rig: Rig, p: Period, timers: Timers | None = None) -> dict[str, Any]:
    """Export period `p` the way `Pipeline.export` does, chunk by chunk in one transaction,
    phases timed by their calls, with the collector on as in the worker."""
    rig.clock.set(p.end + SETTLE)
    if timers is not None:
        timers.reset()
    phases = Timers()
    rig.source.reset()
    batch = _Counted(rig.pipeline.batch(p, INSTANCE))
    with phased(phases):
        t0 = _now()
        rig.sink.publish(batch)
        t4 = _now()
    summary = batch.inner.summary
    fetched = rig.source.last
    encode, produce = phases.get("encode"), phases.get("produce")
    total = [t4[0] - t0[0], t4[1] - t0[1]]
    out: dict[str, Any] = {
        "records": summary.records, "manifests": len(summary.manifests),
        "messages": batch.messages_count, "workloads": rig.source.workloads,
        "bytes_fetched": rig.source.bytes_fetched, "requests": rig.source.queries,
        "message_bytes": batch.bytes,
        "fetch": [fetched.wall, fetched.cpu],
        "compute": [total[0] - fetched.wall - encode.wall - produce.wall,
                    total[1] - fetched.cpu - encode.cpu - produce.cpu],
        "encode": [encode.wall, encode.cpu],
        "produce": [produce.wall, produce.cpu],
        "total": total,
    }
    if timers is not None:
        for name in ("http", "json", "series"):
            s = timers.get(name)
            out[name] = [s.wall, s.cpu]
        http = timers.get("http")
        out["parse"] = [out["fetch"][0] - http.wall, out["fetch"][1] - http.cpu]
        out["own"] = out["total"][0] - (http.wall - http.cpu)
    return out


def _median_pair(pairs: list[tuple[float, float]]) -> list[float]:
    return [statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)]


@contextmanager
def _collector_off() -> Iterator[None]:
    """The "GC paused" column only: what `json.loads` costs without the cyclic collector."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def json_ceiling(bodies: list[bytes], repeat: int = 3, collector: bool = True) -> list[float]:
    """Median [wall, CPU] seconds to `json.loads` the period's response bodies (all kept
    until the end, as the source keeps them), with the cyclic GC on or off."""
    times = []
    for _ in range(repeat):
        paused = _collector_off() if not collector else nullcontext()
        with paused:
            t0 = _now()
            docs = [json.loads(b) for b in bodies]
            t1 = _now()
        del docs
        times.append((t1[0] - t0[0], t1[1] - t0[1]))
    return _median_pair(times)


def _floor_args(rig: Rig, p: Period) -> dict[str, Any]:
    """`bench.floor.floor_bodies`' arguments for period `p`, from the rig's own objects."""
    qplan, step, _ = rig.source.inner.plan_for(p)
    return {"period": p, "step": step, "org": rig.pipeline.org,
            "card": rig.pipeline.pricer.__self__, "columns": qplan.label_columns,
            "settle_delay": rig.pipeline.settle_delay,
            "exporter_version": rig.pipeline.exporter_version}


def same_as_floor(result: Any, bodies: dict[str, bytes], hashes: dict[str, str]) -> dict[str, Any]:
    """Whether the floor's bodies and content hashes for `result`'s period are the very ones
    the exporter wrote."""
    expected = {m.cluster: m.content_hash for m in result.manifests if m.record_count}
    return {"records": len(bodies), "identical": bodies == result.bodies and hashes == expected}


def produce_ceiling(cfg: Config, messages: list[OutMessage], checkpoint: OutMessage,
                    repeat: int = 3) -> list[float]:
    """Median [wall, CPU] seconds to produce the same pre-encoded messages in one transaction with a bare
    confluent-kafka producer configured as the sink's (same broker, topics, compression)."""
    from confluent_kafka import Producer

    from exporter.kafka import client_config

    conf = client_config(cfg.kafka)
    conf.update({"enable.idempotence": True, "acks": "all",
                 "transactional.id": f"{cfg.kafka.transactional_id}-ceiling",
                 "transaction.timeout.ms": cfg.kafka.transaction_timeout * 1000,
                 "linger.ms": 5, "compression.type": "zstd",
                 "message.timeout.ms": cfg.kafka.transaction_timeout * 1000})
    producer = Producer(conf)
    producer.init_transactions(30)
    batch = [*messages, checkpoint]
    times = []
    for _ in range(repeat):
        t0 = _now()
        producer.begin_transaction()
        for m in batch:
            while True:
                try:
                    producer.produce(m.topic, value=m.value, key=m.key, headers=list(m.headers))
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.commit_transaction(60)
        t1 = _now()
        times.append((t1[0] - t0[0], t1[1] - t0[1]))
    producer.flush(5)
    return _median_pair(times)


def avro_throughput(records: list[Any], repeat: int = 3, at_least: int = 20_000) -> dict[str, float]:
    """Records per second: the exporter's encoder (one writer per pass over the period's
    records, as `Pipeline.compute` makes one per period; objects and dicts) vs naive fastavro
    (`schemaless_writer` per record on the same dicts, the dicts built outside the timing),
    and a consumer's decode. Each sample covers at least `at_least` records (the period's
    records, as many passes as that takes), best of `repeat`, so a small fleet gives a stable
    rate too."""
    import fastavro

    from exporter.avro import SingleObjectFraming, load_schema
    from exporter.records import BillingRecord

    schema = load_schema("billing_record")
    passes = max(1, -(-at_least // max(1, len(records))))
    dicts = [r.to_avro() for r in records]
    parsed = schema.parsed

    def generated_objects() -> None:
        for _ in range(passes):
            enc = schema.encoder()
            for r in records:
                enc(r)

    def generated_dicts() -> None:
        for _ in range(passes):
            enc = schema.encoder(attr=False)
            for d in dicts:
                enc(d)

    def naive() -> None:
        writer = fastavro.schemaless_writer
        for _ in range(passes):
            for d in dicts:
                buf = io.BytesIO()
                writer(buf, parsed, d)
                buf.getvalue()

    framing = SingleObjectFraming()
    encode = schema.encoder()
    values = [framing.encode_object("t", "billing_record", r, encode(r)) for r in records]

    def decode() -> None:
        # What a consumer does per message: unframe, fastavro decode, build the record.
        for _ in range(passes):
            for v in values:
                BillingRecord.from_avro(framing.decode(v))

    out: dict[str, float] = {"records": float(len(records))}
    for name, fn in (("generated_objects", generated_objects), ("generated_dicts", generated_dicts),
                     ("fastavro_naive", naive), ("decode", decode)):
        times = [_timed(fn) for _ in range(repeat)]
        # Rates by CPU time: on a shared machine wall time also measures the neighbours.
        best_cpu = min(t[1] for t in times)
        best_wall = min(t[0] for t in times)
        done = passes * len(records)
        out[name] = done / best_cpu if best_cpu > 0 else 0.0
        out[f"{name}_wall"] = done / best_wall if best_wall > 0 else 0.0
    return out


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w, time.thread_time() - c


def consumer_throughput(cfg: Config) -> dict[str, float]:
    """Messages per second reading the records topic back: `read_topic` vs a bare consumer
    assigned to every partition, draining with `consume` batches."""
    from confluent_kafka import Consumer, TopicPartition

    from exporter.kafka import consumer_config, read_topic

    topic = cfg.kafka.topics.records
    began = time.perf_counter()
    n = sum(1 for _ in read_topic(cfg.kafka, topic))
    read_s = time.perf_counter() - began

    consumer = Consumer(consumer_config(cfg.kafka))
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = list(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30,
                                                  cached=False)[1] for p in parts}
        began = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        got = 0
        done: set[int] = {p for p, end in ends.items() if end == 0}
        idle = 0
        # consume() waits its whole timeout for a full batch: keep it short so the tail is cheap.
        while len(done) < len(parts) and idle < 200:
            batch = consumer.consume(num_messages=10_000, timeout=0.05)
            idle = idle + 1 if not batch else 0
            for m in batch:
                if m.error() is not None:
                    if m.partition() is not None:
                        done.add(int(m.partition() or 0))
                    continue
                got += 1
                if (m.offset() or 0) >= ends[int(m.partition() or 0)] - 1:
                    done.add(int(m.partition() or 0))
        raw_s = time.perf_counter() - began
    finally:
        consumer.close()
    return {"messages": float(n), "read_topic_per_s": n / read_s if read_s else 0.0,
            "read_topic_seconds": read_s, "bare_messages": float(got),
            "bare_per_s": got / raw_s if raw_s else 0.0, "bare_seconds": raw_s}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(recording: Path, url: str, bootstrap: str, tag: str, periods: int,
            consumer: bool = True, avro_records: int = 20_000) -> dict[str, Any]:
    """Warm up on one period, then measure `periods` more, each followed by the JSON ceiling and
    the floor on the same answers (so each period's ratios pair figures taken seconds apart),
    then the produce ceiling, the floor's byte check and the Avro rates."""
    rec = Recording.load(recording)
    rig = make_rig(url, bootstrap, tag, recording.parent)
    timers = Timers()
    answers = rec.bodies(recording)
    bodies = [body for group in answers.values() for body in group]
    try:
        with instrumented(timers):
            warm = run_period(rig, period(-1), timers)
            runs = []
            floor_output: tuple[dict[str, bytes], dict[str, str]] | None = None
            for i in range(periods):
                floor_output = None  # the previous period's, freed before this one runs
                run = run_period(rig, period(i), timers)
                # The JSON ceiling runs on a heap like the exporter's between periods: its
                # objects and caches, none of a period's records or messages (every object
                # the heap holds makes the collector, and so the ceiling, slower).
                gc.collect()
                run["ceiling_json"] = json_ceiling(bodies, repeat=1)
                measured = time_floor(answers, repeat=1, **_floor_args(rig, period(i)))
                run["floor"], floor_output = measured[0], (measured[1], measured[2])
                del measured
                runs.append(run)
        peak = peak_rss_mib()
        result: dict[str, Any] = {
            "target_pods": rec.target_pods, "pods": rec.pods, "workloads": rec.workloads,
            "pod_samples": rec.pod_samples, "pod_steps": rec.pod_steps,
            "simulator_seconds": rec.simulator_seconds, "periods": periods,
            "warmup_total": warm["total"], "runs": runs, "peak_rss_mib": peak,
            "ceiling_json": _median_pair([tuple(r["ceiling_json"]) for r in runs]),
        }
        if consumer:
            # Before the produce ceiling, which writes to the same topics.
            result["consumer"] = consumer_throughput(rig.cfg)
        result["json_without_gc"] = json_ceiling(bodies, collector=False)
        # The last period's messages and records once more (computed, not published) for the
        # produce ceiling, the floor's byte check (against its last run) and the Avro rates.
        p = period(periods - 1)
        rig.clock.set(p.end + SETTLE)
        last = rig.pipeline.compute(p)
        messages = list(rig.pipeline.batch(p, INSTANCE).messages())
        checkpoint = rig.pipeline.codec.checkpoint(INSTANCE, p.end, p.length,
                                                   int(rig.clock.time() * 1000))
        result["ceiling_produce"] = produce_ceiling(rig.cfg, messages, checkpoint)
        floor_wall, floor_cpu = _median_pair([tuple(r["floor"]) for r in runs])
        assert floor_output is not None
        result["floor"] = {"wall": floor_wall, "cpu": floor_cpu,
                           **same_as_floor(last, *floor_output)}
        if avro_records:
            result["avro"] = avro_throughput(last.records, at_least=avro_records)
        return result
    finally:
        rig.close()

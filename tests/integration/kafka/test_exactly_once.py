"""The transactional path against a real noida-db broker: records, manifests and checkpoint
commit together, aborted or fenced work is invisible to read_committed consumers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
from confluent_kafka import Producer

from exporter.clock import FakeClock
from exporter.config import Config
from exporter.errors import EncodingError, FencedError, SinkError, SinkUnavailable
from exporter.kafka import client_config, read_topic
from exporter.periods import Period
from exporter.records import BillingRecord
from exporter.wiring import build_checkpoints, build_codec, build_pipeline, build_sink
from tests.fakes.memory import FakeSource
from tests.rigs.kafka import T0, publish_periods

H = 3600


def periods(n: int, start: int = T0) -> list[Period]:
    return [Period(start + i * H, start + (i + 1) * H) for i in range(n)]


def committed_records(cfg: Config) -> list[BillingRecord]:
    codec = build_codec(cfg)
    return [codec.decode_record(m.value) for m in read_topic(cfg.kafka, cfg.kafka.topics.records)
            if m.value is not None]


def export(cfg: Config, clock: FakeClock, ps: list[Period], source: FakeSource | None = None) -> None:
    publish_periods(cfg, clock, ps, source)


def test_periods_commit_with_their_checkpoint(kafka_config: Callable[..., Config]) -> None:
    cfg = kafka_config()
    clock = FakeClock(T0 + 4 * H)
    export(cfg, clock, periods(3))
    records = committed_records(cfg)
    keys = Counter((r.period_start, r.workload_name, r.resource) for r in records)
    assert len(keys) == 3 * 2 * 2  # 3 periods x 2 workloads x 2 resources
    assert set(keys.values()) == {1}
    assert {r.revision for r in records} == {0}
    assert build_checkpoints(cfg, clock).read().last_period_end == T0 + 3 * H
    manifests = list(read_topic(cfg.kafka, cfg.kafka.topics.manifests))
    assert len(manifests) == 3  # one cluster per period
    # the fake source: 0.5 cores chargeable for the whole hour, per workload
    cpu = [r for r in records if r.resource == "cpu"]
    assert {r.chargeable_quantity for r in cpu} == {Decimal("0.500000000")}


def test_encoding_failure_publishes_nothing(kafka_config: Callable[..., Config]) -> None:
    cfg = kafka_config()
    clock = FakeClock(T0 + 4 * H)

    class Huge(FakeSource):
        def fetch(self, period: Period):  # type: ignore[no-untyped-def]
            usage = super().fetch(period)
            w = usage.workloads[1]
            sums = w.sums["cpu"]
            big = type(sums)(sums.usage, sums.request, Decimal("1e30"))
            object.__setattr__(w, "sums", {**w.sums, "cpu": big})
            return usage

    with pytest.raises(EncodingError, match="chargeable_quantity"):
        export(cfg, clock, periods(1), source=Huge(clock))
    assert build_checkpoints(cfg, clock).read() is None


def test_second_instance_fences_the_first(kafka_config: Callable[..., Config]) -> None:
    cfg = kafka_config()
    clock = FakeClock(T0 + 4 * H)
    pipeline = build_pipeline(cfg, clock, source=FakeSource(clock))
    first = build_sink(cfg, clock)
    first.start()
    p1, p2 = periods(2)
    pipeline.export(p1, first, cfg.kafka.transactional_id)
    second = build_sink(cfg, clock)
    second.start()  # same transactional.id: fences `first`
    with pytest.raises(FencedError, match="took over"):
        pipeline.export(p2, first, cfg.kafka.transactional_id)
    pipeline.export(p2, second, cfg.kafka.transactional_id)
    second.close()
    first.close()
    keys = Counter((r.period_start, r.workload_name, r.resource) for r in committed_records(cfg))
    assert len(keys) == 8 and set(keys.values()) == {1}


def test_crash_mid_transaction_leaves_no_trace(kafka_config: Callable[..., Config]) -> None:
    """A producer that dies inside a transaction: the restarted instance aborts it on start."""
    cfg = kafka_config()
    clock = FakeClock(T0 + 4 * H)
    export(cfg, clock, periods(1))
    pipeline = build_pipeline(cfg, clock, source=FakeSource(clock))
    batch = pipeline.batch(periods(2)[1], cfg.kafka.transactional_id)
    # A zombie: same transactional.id, begins the transaction, produces half, never commits.
    conf = client_config(cfg.kafka)
    conf.update({"transactional.id": cfg.kafka.transactional_id, "enable.idempotence": True,
                 "transaction.timeout.ms": 30000})
    zombie = Producer(conf)
    zombie.init_transactions(10)
    zombie.begin_transaction()
    msgs = list(batch.messages())
    for m in msgs[: len(msgs) // 2]:
        zombie.produce(m.topic, m.value, m.key)
    zombie.flush(10)
    # restart: the new instance reads the checkpoint and republishes the period
    assert build_checkpoints(cfg, clock).read().last_period_end == T0 + H
    export(cfg, clock, [periods(2)[1]])
    keys = Counter((r.period_start, r.workload_name, r.resource) for r in committed_records(cfg))
    assert len(keys) == 8 and set(keys.values()) == {1}
    assert build_checkpoints(cfg, clock).read().last_period_end == T0 + 2 * H


def test_missing_topic_with_creation_disabled(kafka_config: Callable[..., Config]) -> None:
    cfg = kafka_config(kafka={"create_topics": False})
    sink = build_sink(cfg, FakeClock(T0))
    with pytest.raises(SinkError, match=r"do not exist and kafka\.create_topics is false"):
        sink.start()


def test_unreachable_broker_fails_within_bound(kafka_config: Callable[..., Config]) -> None:
    cfg = kafka_config(kafka={"bootstrap_servers": "127.0.0.1:1"})
    clock = FakeClock(T0)
    sink = build_sink(cfg, clock)
    sink._admin._timeout = 0.5  # keep the real timeouts out of the test's wall time
    with pytest.raises(SinkUnavailable, match=r"127\.0\.0\.1:1"):
        sink.start()
    assert 0 < len(clock.sleeps) <= 4

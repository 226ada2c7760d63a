"""The worker against a real noida-db broker: catch-up, restart from the Kafka checkpoint, fencing."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import Clock, FakeClock
from exporter.config import Config
from exporter.errors import FencedError
from exporter.kafka import read_topic
from exporter.metrics import Metrics
from exporter.run import Parts, Service, assemble
from exporter.wiring import build_codec, build_worker_parts
from tests.fakes.memory import FakeSource
from tests.rigs.kafka import T0, make_config

H = 3600


def service(cfg: Config, clock: FakeClock) -> Service:
    """The production wiring (`run.assemble` + the real factories) with a fake Sysdig source."""

    def build(c: Config, k: Clock, m: Metrics) -> Parts:
        pipeline, sink, checkpoints = build_worker_parts(c, k, m)
        pipeline.source = FakeSource(k)
        return pipeline, sink, checkpoints

    return assemble(cfg, clock, Metrics(CollectorRegistry()), build, serve_http=False)


def record_periods(cfg: Config) -> Counter[int]:
    codec = build_codec(cfg)
    return Counter(codec.decode_record(m.value).period_start // 1000
                   for m in read_topic(cfg.kafka, cfg.kafka.topics.records) if m.value is not None)


def test_catch_up_then_restart_from_the_kafka_checkpoint(noida: LocalBroker) -> None:
    cfg = make_config(noida.bootstrap, worker={"max_batch_periods": 2})
    clock = FakeClock(T0 + 3 * H + 300)
    first = service(cfg, clock)
    first.worker.start()
    assert len(first.worker.export_all()) == 3
    first.worker.close()
    assert record_periods(cfg) == {T0: 4, T0 + H: 4, T0 + 2 * H: 4}

    # A new process reads the committed checkpoint back (read_committed) and continues after it.
    clock.advance(2 * H)
    second = service(cfg, clock)
    second.worker.start()
    assert second.worker.next_period_start == T0 + 3 * H
    assert second.metrics.registry.get_sample_value(
        "chargeback_last_closed_period_end_seconds") == T0 + 3 * H
    outcome = second.worker.export_due()
    assert [p.start for p in outcome.exported] == [T0 + 3 * H, T0 + 4 * H]
    second.worker.close()
    periods = record_periods(cfg)
    assert sorted(periods) == [T0 + i * H for i in range(5)]
    assert set(periods.values()) == {4}  # each period exactly once
    assert second.metrics.registry.get_sample_value(
        "chargeback_periods_exported_total", {"mode": "live"}) == 2


def test_fenced_worker_stops_with_exit_code_4(noida: LocalBroker) -> None:
    cfg = make_config(noida.bootstrap)
    clock = FakeClock(T0 + 2 * H + 300)
    first = service(cfg, clock)
    first.worker.start()
    first.worker.export_due()
    second = service(cfg, clock)
    second.worker.start()  # same transactional.id: fences the first
    clock.advance(H)
    with pytest.raises(FencedError) as caught:
        first.worker.export_due()
    assert caught.value.exit_code == 4
    first.worker.close()
    assert second.worker.export_due().exported
    second.worker.close()
    assert set(record_periods(cfg).values()) == {4}

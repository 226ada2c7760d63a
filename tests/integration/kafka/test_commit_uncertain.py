"""A commit whose outcome is unknown is settled before anything is published again."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import Clock, FakeClock
from exporter.config import Config
from exporter.metrics import Metrics
from exporter.run import Parts, assemble
from exporter.wiring import build_worker_parts
from tests.fakes.memory import FakeSource
from tests.fakes.sinks import LostAck
from tests.integration.kafka.test_kafka_worker import record_periods
from tests.rigs.kafka import T0, make_config

H = 3600


def test_worker_settles_an_unknown_commit_instead_of_publishing_twice(noida: LocalBroker) -> None:
    cfg = make_config(noida.bootstrap)
    clock = FakeClock(T0 + 3 * H + 300)
    holder: dict[str, LostAck] = {}

    def build(c: Config, k: Clock, m: Metrics) -> Parts:
        pipeline, sink, checkpoints = build_worker_parts(c, k, m)
        pipeline.source = FakeSource(k)
        holder["sink"] = LostAck(sink, lose={2})
        return pipeline, holder["sink"], checkpoints

    service = assemble(cfg, clock, Metrics(CollectorRegistry()), build, serve_http=False)
    service.worker.start()
    exported = service.worker.export_all()
    service.worker.close()
    assert len(exported) == 3
    sink = holder["sink"]
    assert sink.recoveries == 1
    assert sink.publishes == 3  # the in-doubt period was found committed, not published again
    assert record_periods(cfg) == {T0: 4, T0 + H: 4, T0 + 2 * H: 4}

"""A commit whose outcome is unknown is settled before anything is published again."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import Clock, FakeClock
from exporter.config import Config
from exporter.errors import CommitUncertain
from exporter.kafka import KafkaPeriodSink
from exporter.metrics import Metrics
from exporter.run import Parts, assemble
from exporter.sink import OutMessage
from exporter.wiring import build_worker_parts
from tests.fakes.memory import FakeSource
from tests.kafka.conftest import T0, make_config
from tests.worker.test_kafka_worker import record_periods

pytestmark = pytest.mark.integration
H = 3600


class LostAck:
    """The real sink, except that chosen publishes commit and then report an unknown outcome
    (the broker committed, the answer to EndTxn was lost); with `commit` False those publishes
    send nothing (the transaction never reached the coordinator) and report the same."""

    def __init__(self, inner: KafkaPeriodSink, lose: set[int], commit: bool = True) -> None:
        self.inner = inner
        self.lose = lose
        self.commit = commit
        self.calls = 0
        self.recovered = 0

    def start(self) -> None:
        self.inner.start()

    def publish(self, messages: Sequence[OutMessage], checkpoint: OutMessage) -> None:
        self.calls += 1
        if self.commit or self.calls not in self.lose:
            self.inner.publish(messages, checkpoint)
        if self.calls in self.lose:
            raise CommitUncertain("Kafka: commit outcome unknown (test: answer lost)")

    def recover(self) -> None:
        self.recovered += 1
        self.inner.recover()

    def close(self) -> None:
        self.inner.close()


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
    assert sink.recovered == 1
    assert sink.calls == 3  # the in-doubt period was found committed, not published again
    assert record_periods(cfg) == {T0: 4, T0 + H: 4, T0 + 2 * H: 4}

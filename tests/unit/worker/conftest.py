"""A worker wired to the real `Pipeline` on a fake clock, fake source and in-memory broker:
`rig(...)` builds one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.avro.messages import AvroCodec
from exporter.clock import FakeClock
from exporter.config import Config, PeriodsConfig, WorkerConfig
from exporter.health import HealthState
from exporter.metrics import Metrics
from exporter.periods import parse_time
from exporter.pipeline import Pipeline
from exporter.records import BillingRecord
from exporter.wiring import build_codec, build_pipeline
from exporter.worker import Worker
from tests.fakes.memory import FakeSource, MemoryBroker, MemorySink

HOUR = 3600
SETTLE = 300
INSTANCE = "chargeback-test"
# An hour boundary; rigs start just after its settle delay, so [T0 - 1h, T0) is the newest closed period.
T0 = parse_time("2026-11-02T12:00:00Z")
# The default single-object framing names each value's schema, so it decodes what any rig publishes.
CODEC: AvroCodec = build_codec(Config())


def new_broker() -> MemoryBroker:
    """An in-memory broker reading the Avro checkpoints the real codec writes."""
    return MemoryBroker(CODEC.decode_checkpoint)


def committed_records(broker: MemoryBroker) -> list[BillingRecord]:
    """Every committed billing record, in commit order."""
    return [obj for m in broker.committed_messages()
            for kind, obj in [CODEC.decode_any(m.value)] if isinstance(obj, BillingRecord)]


def published_periods(broker: MemoryBroker) -> list[int]:
    """Period starts of the committed records, in commit order, one per transaction."""
    out: list[int] = []
    for t in broker.transactions:
        starts = {obj.period.start for m in t.messages
                  for _, obj in [CODEC.decode_any(m.value)] if isinstance(obj, BillingRecord)}
        assert len(starts) <= 1, "a transaction mixed periods"
        out.extend(starts)
    return out


@dataclass
class Rig:
    clock: FakeClock
    broker: MemoryBroker
    sink: MemorySink
    source: FakeSource
    pipeline: Pipeline
    metrics: Metrics
    health: HealthState
    worker: Worker
    periods: PeriodsConfig
    worker_cfg: WorkerConfig

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def published_periods(self) -> list[int]:
        return published_periods(self.broker)

    def records(self) -> list[BillingRecord]:
        return committed_records(self.broker)

    def seed_checkpoint(self, last_period_end: int, period_seconds: int = HOUR) -> None:
        """A checkpoint committed by a predecessor instance, in the real codec's format."""
        self.broker.seed(CODEC.checkpoint(INSTANCE, last_period_end, period_seconds,
                                          int(self.clock.time() * 1000)))

    def restart(self) -> Rig:
        """A new process on the same broker: new sink (fences the old one), same clock."""
        return make_rig(clock=self.clock, broker=self.broker, periods=self.periods,
                        worker_cfg=self.worker_cfg)


def make_rig(*, clock: FakeClock | None = None, broker: MemoryBroker | None = None,
             periods: PeriodsConfig | None = None, worker_cfg: WorkerConfig | None = None,
             **periods_kw: Any) -> Rig:
    clock = clock or FakeClock(T0 + SETTLE)
    periods = periods or PeriodsConfig(length=HOUR, settle_delay=SETTLE, **periods_kw)
    worker_cfg = worker_cfg or WorkerConfig()
    cfg = Config(periods=periods, worker=worker_cfg)
    metrics = Metrics(CollectorRegistry())
    broker = broker or new_broker()
    sink = MemorySink(broker, transactional_id=INSTANCE,
                      on_abort=lambda reason: metrics.transaction_aborts.inc())
    source = FakeSource(clock, resolution=periods.resolution)
    pipeline: Pipeline = build_pipeline(cfg, clock, metrics, source=source)
    health = HealthState(clock, periods.length, periods.settle_delay)
    worker = Worker(pipeline, sink, sink, clock, periods, worker_cfg, metrics, INSTANCE, health)
    return Rig(clock, broker, sink, source, pipeline, metrics, health, worker, periods, worker_cfg)


@pytest.fixture
def rig() -> Callable[..., Rig]:
    """Factory: `rig(start=..., worker_cfg=WorkerConfig(...), clock=..., broker=...)`."""
    return make_rig

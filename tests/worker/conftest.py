"""A worker wired to in-memory collaborators on a fake clock: `rig(...)` builds one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.clock import FakeClock
from exporter.config import PeriodsConfig, WorkerConfig
from exporter.health import HealthState
from exporter.metrics import Metrics
from exporter.periods import parse_time
from exporter.worker import Worker
from tests.fakes.memory import FakeSource, MemoryBroker, MemoryPipeline, MemorySink

HOUR = 3600
SETTLE = 300
INSTANCE = "chargeback-test"
# An hour boundary; rigs start just after its settle delay, so [T0 - 1h, T0) is the newest closed period.
T0 = parse_time("2026-11-02T12:00:00Z")


@dataclass
class Rig:
    clock: FakeClock
    broker: MemoryBroker
    sink: MemorySink
    source: FakeSource
    pipeline: MemoryPipeline
    metrics: Metrics
    health: HealthState
    worker: Worker
    periods: PeriodsConfig
    worker_cfg: WorkerConfig

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def restart(self) -> Rig:
        """A new process on the same broker: new sink (fences the old one), same clock."""
        return make_rig(clock=self.clock, broker=self.broker, periods=self.periods,
                        worker_cfg=self.worker_cfg)


def make_rig(*, clock: FakeClock | None = None, broker: MemoryBroker | None = None,
             periods: PeriodsConfig | None = None, worker_cfg: WorkerConfig | None = None,
             **periods_kw: Any) -> Rig:
    clock = clock or FakeClock(T0 + SETTLE)
    periods = periods or PeriodsConfig(length=HOUR, settle_delay=SETTLE, **periods_kw)
    metrics = Metrics(CollectorRegistry())
    broker = broker or MemoryBroker()
    sink = MemorySink(broker, on_abort=lambda reason: metrics.transaction_aborts.inc())
    source = FakeSource(clock, resolution=periods.resolution)
    pipeline = MemoryPipeline(source)
    health = HealthState(clock, periods.length, periods.settle_delay)
    worker_cfg = worker_cfg or WorkerConfig()
    worker = Worker(pipeline, sink, sink, clock, periods, worker_cfg, metrics, INSTANCE, health)
    return Rig(clock, broker, sink, source, pipeline, metrics, health, worker, periods, worker_cfg)


@pytest.fixture
def rig() -> Callable[..., Rig]:
    """Factory: `rig(start=..., worker_cfg=WorkerConfig(...), clock=..., broker=...)`."""
    return make_rig

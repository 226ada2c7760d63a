"""The worker driving the real `Pipeline` and `AvroCodec` (fake source, in-memory broker)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.clock import FakeClock
from exporter.commands import build_pipeline
from exporter.config import Config, load_config
from exporter.errors import IncompleteDataError
from exporter.health import HealthState
from exporter.metrics import Metrics
from exporter.periods import Period
from exporter.worker import Worker
from tests.fakes.memory import FakeSource, MemoryBroker, MemorySink

from .conftest import HOUR, SETTLE, T0

INSTANCE = "chargeback-real"


class RealRig:
    def __init__(self, cfg: Config, clock: FakeClock, broker: MemoryBroker | None = None) -> None:
        self.clock = clock
        self.metrics = Metrics(CollectorRegistry())
        self.source = FakeSource(clock, cfg.periods.resolution)
        self.pipeline = build_pipeline(cfg, clock, self.metrics, source=self.source)
        self.codec = self.pipeline.codec
        self.broker = broker or MemoryBroker(self.codec.decode_checkpoint)
        self.sink = MemorySink(self.broker)
        self.worker = Worker(self.pipeline, self.sink, self.sink, clock, cfg.periods, cfg.worker,
                             self.metrics, INSTANCE,
                             HealthState(clock, cfg.periods.length, cfg.periods.settle_delay))

    def transactions(self) -> list[dict[str, list[Any]]]:
        """Each committed transaction decoded: {schema: [objects]}."""
        out = []
        for t in self.broker.transactions:
            decoded: dict[str, list[Any]] = {}
            for m in (*t.messages, t.checkpoint):
                kind, obj = self.codec.decode_any(m.value)
                decoded.setdefault(kind, []).append(obj)
            out.append(decoded)
        return out


def config(**periods: Any) -> Config:
    return load_config(environ={}, overrides={
        "periods": {"length": "1h", "settle_delay": "5m", **periods},
        "worker": {"max_batch_periods": 3},
    })


def test_catch_up_publishes_avro_records_manifest_and_checkpoint_per_period() -> None:
    clock = FakeClock(T0 + SETTLE)
    r = RealRig(config(start=T0 - 2 * HOUR), clock)
    r.worker.start()
    r.worker.export_due()
    clock.advance(4 * HOUR)
    while r.worker.export_due().more_due:
        pass

    txs = r.transactions()
    starts = [T0 - 2 * HOUR + i * HOUR for i in range(6)]
    assert len(txs) == 6
    for tx, start in zip(txs, starts, strict=True):
        periods = {rec.period for rec in tx["billing_record"]}
        assert periods == {Period(start, start + HOUR)}
        assert len(tx["billing_record"]) == 4  # 2 workloads x cpu, memory
        [manifest] = tx["period_manifest"]
        assert manifest.cluster == "prod" and manifest.record_count == 4
        [checkpoint] = tx["checkpoint"]
        assert checkpoint.instance == INSTANCE
        assert checkpoint.last_period_end == (start + HOUR) * 1000
    assert r.broker.checkpoint_ends() == [s + HOUR for s in starts]

    # Quantities went through exactly: 0.5 core requested for an hour is 0.5 Core-Hours.
    web_cpu = [rec for rec in txs[0]["billing_record"]
               if rec.workload_name == "web" and rec.resource == "cpu"]
    assert web_cpu[0].chargeable_quantity == Decimal("0.5")
    assert web_cpu[0].costcenter == "CC-100"

    # A restarted instance reads the Avro checkpoint back and has nothing to redo.
    r2 = RealRig(config(start=T0 - 2 * HOUR), clock, r.broker)
    r2.worker.start()
    assert r2.worker.next_period_start == T0 + 4 * HOUR
    assert r2.worker.export_due().exported == ()


def test_old_period_records_name_the_coarser_step() -> None:
    clock = FakeClock(T0 + SETTLE)
    r = RealRig(config(start=T0 - 3 * 24 * HOUR), clock)
    r.worker.start()
    r.worker.export_due()
    methods = {rec.method for tx in r.transactions() for rec in tx["billing_record"]}
    assert methods == {"max-request-usage/pod/600s/v1"}


def test_low_coverage_is_held_by_the_real_pipeline() -> None:
    clock = FakeClock(T0 + SETTLE)
    r = RealRig(config(), clock)
    r.source.coverage[T0 - HOUR] = Decimal("0.9")
    r.worker.start()
    outcome = r.worker.export_due()
    assert isinstance(outcome.error, IncompleteDataError)
    assert r.broker.transactions == []


def test_low_coverage_published_flagged_when_configured() -> None:
    clock = FakeClock(T0 + SETTLE)
    r = RealRig(config(incomplete_policy="publish-flagged"), clock)
    r.source.coverage[T0 - HOUR] = Decimal("0.9")
    r.worker.start()
    assert r.worker.export_due().exported == (Period(T0 - HOUR, T0),)
    [tx] = r.transactions()
    assert [m.status for m in tx["period_manifest"]] == ["low-coverage"]

"""The worker driving the real `Pipeline` and `AvroCodec` (fake source, in-memory broker)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from chargeback_simulator.fleet import FleetSpec
from exporter.clock import FakeClock
from exporter.config import Config, load_config
from exporter.errors import IncompleteDataError
from exporter.health import HealthState
from exporter.metrics import Metrics
from exporter.periods import Period
from exporter.wiring import build_pipeline
from exporter.worker import Worker
from tests.fakes.memory import FakeSource, MemoryBroker, MemorySink
from tests.rigs.sim import T0 as SIM_T0
from tests.rigs.sim import Sim

from .conftest import HOUR, SETTLE, T0

INSTANCE = "chargeback-real"


class RealRig:
    """The real pipeline on an in-memory broker; `sysdig`: measured by the real Sysdig source
    (point `cfg` at a simulator), else by a `FakeSource`."""

    def __init__(self, cfg: Config, clock: FakeClock, broker: MemoryBroker | None = None,
                 sysdig: bool = False) -> None:
        self.clock = clock
        self.metrics = Metrics(CollectorRegistry())
        self.source = FakeSource(clock, cfg.periods.resolution)
        self.pipeline = build_pipeline(cfg, clock, self.metrics,
                                       source=None if sysdig else self.source)
        self.codec = self.pipeline.codec
        self.broker = broker or MemoryBroker(self.codec.decode_checkpoint)
        self.sink = MemorySink(self.broker, transactional_id=INSTANCE)
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
    r = RealRig(config(start=T0 - 10 * 24 * HOUR), clock)
    r.worker.start()
    r.worker.export_due()
    methods = {rec.method for tx in r.transactions() for rec in tx["billing_record"]}
    assert methods == {"max-request-usage/pod/600s/v1"}


def test_a_period_five_hours_old_is_measured_at_60s_from_the_simulators_timelines() -> None:
    """The worker asks Sysdig's timelines (here the simulator's defaults: 10 s data for 4 h) and
    measures a period whose start is 5 h old at 1-minute steps, exactly."""
    sim = Sim(FleetSpec(seed=3), now=SIM_T0 + 5 * HOUR + SETTLE)
    sim.server.start()
    try:
        cfg = sim.config(periods={"start": SIM_T0, "settle_delay": "5m"},
                         worker={"max_batch_periods": 1})
        r = RealRig(cfg, sim.clock, sysdig=True)
        r.worker.start()
        outcome = r.worker.export_due()
    finally:
        sim.server.stop()
    assert outcome.exported == (Period(SIM_T0, SIM_T0 + HOUR),)
    records = [rec for tx in r.transactions() for rec in tx["billing_record"]]
    assert records and {rec.method for rec in records} == {"max-request-usage/pod/60s/v1"}
    assert r.metrics.registry.get_sample_value("chargeback_coarse_periods_total",
                                               {"step": "60"}) == 1
    assert any(req.path == "/api/history/timelines/" for req in sim.server.requests)
    truth = sim.fleet.ground_truth(SIM_T0, SIM_T0 + HOUR, resolution=60)
    scale = Decimal("0.000000001")  # the records' quantity scale
    got = {(rec.cluster, rec.namespace, rec.workload_kind.lower(), rec.workload_name, rec.resource):
           (rec.usage_quantity, rec.request_quantity, rec.chargeable_quantity) for rec in records}
    want = {(key.cluster, key.namespace, key.kind, key.name, res):
            tuple(v.quantize(scale) for v in (s.usage, s.request, s.chargeable))
            for key, per in truth.items() for res, s in per.items()}
    assert got == want


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

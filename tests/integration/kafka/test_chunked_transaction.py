"""A period published chunk by chunk is still one transaction: when its last chunk fails after
the earlier chunks' records were produced, a `read_committed` consumer sees nothing of it; the
worker holds the period, retries it, and it is then published exactly once. Real noida-db
broker, real sdcclient against the simulator, the production wiring."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import Clock, FakeClock
from exporter.config import Config
from exporter.errors import SourceUnavailable
from exporter.metrics import Metrics
from exporter.model import PeriodUsage
from exporter.periods import Period
from exporter.run import Parts, Service, assemble
from exporter.source import UsageSource
from exporter.wiring import build_codec, build_pipeline, build_worker_parts
from tests.rigs.harness import last_checkpoint, read_committed, read_uncommitted
from tests.rigs.kafka import make_config
from tests.rigs.sim import T0 as SIM_T0
from tests.rigs.sim import TOKEN, H, Sim

PERIOD = Period(SIM_T0 + 2 * H, SIM_T0 + 3 * H)


class LastChunkFailsOnce:
    """The real source, except that the first time a period is measured its last chunk fails
    (Sysdig stops answering), after every earlier chunk was handed over."""

    def __init__(self, inner: UsageSource) -> None:
        self.inner = inner
        self.failed = False
        self.handed: list[int] = []  # chunks handed over per measurement

    def fetch(self, period: Period) -> PeriodUsage:
        return self.inner.fetch(period)

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        chunks = self.inner.fetch_chunks(period)
        current = next(chunks)
        handed = 0
        for upcoming in chunks:
            handed += 1
            yield current
            current = upcoming
        self.handed.append(handed)
        if not self.failed:
            self.failed = True
            raise SourceUnavailable(f"Sysdig: the last cluster group of {period} timed out")
        yield current

    def step_for(self, period: Period) -> int:
        return self.inner.step_for(period)


def test_a_failed_last_chunk_publishes_nothing_then_the_retry_publishes_once(
        noida: LocalBroker, sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=3, clusters=5, namespaces_per_cluster=2, workloads_per_namespace=4)
    cfg: Config = make_config(
        noida.bootstrap, periods={"start": PERIOD.start, "settle_delay": "2m"},
        sysdig={"url": sim.server.url, "token": TOKEN, "max_attempts": 1, "group_series": 20,
                "retention_tiers": False})
    clock = FakeClock(PERIOD.end + 300)
    flaky: list[LastChunkFailsOnce] = []

    def build(c: Config, k: Clock, m: Metrics) -> Parts:
        pipeline, sink, checkpoints = build_worker_parts(c, k, m)
        flaky.append(LastChunkFailsOnce(pipeline.source))
        pipeline.source = flaky[0]
        return pipeline, sink, checkpoints

    service: Service = assemble(cfg, clock, Metrics(CollectorRegistry()), build, serve_http=False)
    worker = service.worker
    worker.start()
    try:
        held = worker.export_due()
        assert held.exported == () and held.held == PERIOD
        assert isinstance(held.error, SourceUnavailable)
        assert flaky[0].handed[0] >= 2, "earlier chunks were built and produced first"
        topics = cfg.kafka.topics
        # The earlier chunks' records reached the broker inside the transaction, now aborted.
        assert read_uncommitted(cfg, topics.records)
        assert read_committed(cfg, topics.records) == []
        assert read_committed(cfg, topics.manifests) == []
        assert last_checkpoint(cfg) is None
        assert service.metrics.registry.get_sample_value(
            "chargeback_transaction_aborts_total") == 1

        retried = worker.export_due()
        assert retried.exported == (PERIOD,) and retried.error is None
    finally:
        worker.close()

    expected = build_pipeline(cfg, sim.clock).compute(PERIOD)
    assert len(expected.records) > 0
    codec = build_codec(cfg)
    committed = read_committed(cfg, cfg.kafka.topics.records)
    ids = Counter(m.key for m in committed)
    assert set(ids.values()) == {1}, "each record exactly once"
    assert sorted(ids) == sorted(r.record_id.encode() for r in expected.records)
    assert {codec.decode_record(m.value).record_id: m.value for m in committed} == {
        rid: codec.records([r], (), expected.bodies)[0].value
        for r in expected.records for rid in [r.record_id]}
    manifests = [codec.decode_manifest(m.value)
                 for m in read_committed(cfg, cfg.kafka.topics.manifests)]
    assert sorted(m.cluster for m in manifests) == sorted(m.cluster for m in expected.manifests)
    assert last_checkpoint(cfg) == PERIOD.end

"""A period measured in several cluster groups is built and published chunk by chunk: the
billing records alive at once are one chunk's, never the fleet's, and the records are the same,
byte for byte, as when the period comes in one chunk. Real sdcclient against the simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exporter.model import PeriodUsage
from exporter.periods import Period
from exporter.pipeline import Pipeline
from exporter.records import BillingRecord
from exporter.source import UsageSource
from exporter.wiring import build_pipeline, build_source
from tests.fakes.memory import MemoryBroker, MemorySink
from tests.rigs.sim import T0, H, Sim

PERIOD = Period(T0 + H, T0 + 2 * H)


class LiveRecords:
    """Counts `BillingRecord` objects alive (constructed, not yet freed), and the peak."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.made = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        init = BillingRecord.__init__

        def counted_init(obj: Any, *args: Any, **kwargs: Any) -> None:
            init(obj, *args, **kwargs)
            self.live += 1
            self.made += 1
            self.peak = max(self.peak, self.live)

        def freed(obj: Any) -> None:
            self.live -= 1

        monkeypatch.setattr(BillingRecord, "__init__", counted_init)
        monkeypatch.setattr(BillingRecord, "__del__", freed, raising=False)

    def reset(self) -> None:
        self.peak = self.live
        self.made = 0


class Chunks:
    """The real source, passed through, noting the clusters of each chunk it yields."""

    def __init__(self, inner: UsageSource) -> None:
        self.inner = inner
        self.seen: list[frozenset[str]] = []

    def fetch(self, period: Period) -> PeriodUsage:
        return self.inner.fetch(period)

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        self.seen = []
        for chunk in self.inner.fetch_chunks(period):
            self.seen.append(chunk.clusters)
            yield chunk

    def step_for(self, period: Period) -> int:
        return self.inner.step_for(period)


def grouped(sim: Sim, group_series: int | None) -> tuple[Pipeline, Chunks]:
    """The configured pipeline of `sim`, with `sysdig.group_series` set when given."""
    cfg = sim.config(sysdig={} if group_series is None else {"group_series": group_series,
                                                             "prefetch_groups": 0})
    source = Chunks(build_source(cfg, sim.clock))
    return build_pipeline(cfg, sim.clock, source=source), source


def small_groups(sim: Sim) -> int:
    """A `group_series` that puts one or two clusters in a group."""
    counts = build_source(sim.config(), sim.clock)._count(PERIOD, PERIOD.end - 5)[0]
    assert len(counts) == sim.fleet.spec.clusters
    return max(counts.values())


@pytest.fixture
def sim(sim_factory: Callable[..., Sim]) -> Sim:
    return sim_factory(seed=11, clusters=6, namespaces_per_cluster=2, workloads_per_namespace=4)


def test_live_records_are_bounded_by_the_largest_chunk_not_the_fleet(
        sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, source = grouped(sim, small_groups(sim))
    whole = pipeline.compute(PERIOD)
    per_cluster = {m.cluster: m.record_count for m in whole.manifests}
    total = sum(per_cluster.values())
    del whole

    counter = LiveRecords()
    counter.install(monkeypatch)
    sink = MemorySink(MemoryBroker(), transactional_id="chunks")
    sink.start()
    counter.reset()
    summary = pipeline.export(PERIOD, sink, "chunks")
    assert summary.records == total == counter.made  # each record built once
    chunk_records = [sum(per_cluster.get(c, 0) for c in clusters) for clusters in source.seen]
    assert len(chunk_records) >= 3 and sum(chunk_records) == total
    largest = max(chunk_records)
    assert 2 * largest < total, "the test needs a fleet of several chunks"
    assert counter.peak - counter.live <= largest, (counter.peak, chunk_records)
    assert counter.peak - counter.live >= min(n for n in chunk_records if n)

    # The collector of the same chunks keeps them all: the counter does see a whole period.
    counter.reset()
    kept = pipeline.compute(PERIOD)
    assert counter.peak - counter.live + len(kept.records) >= total
    assert len(kept.records) == total


def test_records_are_the_same_in_one_chunk_or_many(sim: Sim) -> None:
    chunked, source = grouped(sim, small_groups(sim))
    many = chunked.compute(PERIOD)
    assert len(source.seen) >= 3
    single, one = grouped(sim, None)
    whole = single.compute(PERIOD)
    assert len(one.seen) == 1
    assert many.bodies == whole.bodies
    assert [r.record_id for r in many.records] == [r.record_id for r in whole.records]
    assert many.manifests == whole.manifests

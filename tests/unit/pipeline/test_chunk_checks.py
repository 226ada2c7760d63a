"""The checks of a whole period still hold when it comes in chunks: an expected cluster that no
chunk covers holds it, and a hold names every incomplete cluster of every chunk, as one check of
the merged period would; nothing is published meanwhile."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pytest

from exporter.clock import FakeClock
from exporter.completeness import MissingClusters, check
from exporter.config import Config
from exporter.errors import IncompleteDataError
from exporter.model import PeriodUsage, SampleSums, WorkloadKey, WorkloadUsage, merge_usage
from exporter.periods import Period
from exporter.wiring import build_pipeline
from tests.fakes.memory import MemoryBroker, MemorySink

T0 = 1_794_009_600
PERIOD = Period(T0, T0 + 3600)
STEPS = Decimal(360)


def chunk(clusters: Sequence[str], *, no_requests: Sequence[str] = (),
          coverage: Decimal = Decimal(1)) -> PeriodUsage:
    """One chunk with a workload per cluster; `no_requests` clusters lack request series."""
    workloads = tuple(
        WorkloadUsage(WorkloadKey(c, "ns", "deployment", "web"), {}, {
            "cpu": SampleSums(STEPS, STEPS, STEPS),
            "memory": SampleSums(STEPS * 2**30, STEPS * 2**30, STEPS * 2**30)})
        for c in clusters)
    return PeriodUsage(PERIOD, 10, "pod", workloads, dict.fromkeys(clusters, coverage),
                       usage_clusters=frozenset(clusters),
                       request_clusters=frozenset(clusters).difference(no_requests),
                       clusters=frozenset(clusters))


class Chunked:
    """A usage source yielding fixed chunks; counts how many were handed over."""

    def __init__(self, *chunks: PeriodUsage) -> None:
        self.chunks = chunks
        self.handed = 0

    def fetch(self, period: Period) -> PeriodUsage:
        return merge_usage(list(self.chunks))

    def fetch_chunks(self, period: Period) -> Iterator[PeriodUsage]:
        self.handed = 0
        for c in self.chunks:
            self.handed += 1
            yield c

    def step_for(self, period: Period) -> int:
        return 10


def export(source: Chunked, published: dict[str, int] | None = None) -> MemoryBroker:
    clock = FakeClock(PERIOD.end + 600)
    pipeline = build_pipeline(Config(), clock, source=source)
    broker = MemoryBroker()
    sink = MemorySink(broker, transactional_id="t")
    sink.start()
    pipeline.export(PERIOD, sink, "t", published=published)
    return broker


def test_a_hold_names_the_incomplete_clusters_of_every_chunk_as_one_check_would() -> None:
    chunks = (chunk(["a", "b"], no_requests=["a"]), chunk(["c"]), chunk(["d"], no_requests=["d"]))
    source = Chunked(*chunks)
    with pytest.raises(MissingClusters) as held:
        export(source)
    assert source.handed == 3  # measured to the end to name them all
    assert held.value.missing == {"a": ("requests",), "d": ("requests",)}
    with pytest.raises(MissingClusters) as whole:
        check(merge_usage(list(chunks)), {}, publish_empty=False)
    assert str(held.value) == str(whole.value)


def test_an_expected_cluster_no_chunk_covers_holds_the_period() -> None:
    source = Chunked(chunk(["a"]), chunk(["b"]))
    with pytest.raises(MissingClusters, match="cluster gone: no usage series and no request "
                                              "series") as held:
        export(source, published={"gone": PERIOD.start})
    assert held.value.missing == {"gone": ("usage", "requests")}


def test_low_coverage_in_the_last_chunk_holds_the_whole_period() -> None:
    source = Chunked(chunk(["a"]), chunk(["b"], coverage=Decimal("0.5")))
    with pytest.raises(IncompleteDataError, match=r"sample coverage below 0.95 for cluster\(s\) b"):
        export(source)


def test_complete_chunks_publish_every_cluster_in_one_transaction() -> None:
    broker = export(Chunked(chunk(["a"]), chunk(["b"]), chunk(["c"])))
    [transaction] = broker.transactions
    assert len(transaction.messages) == 3 * 2 + 3  # cpu and memory per cluster, 3 manifests


def with_claims(usage: PeriodUsage, clusters: Sequence[str]) -> PeriodUsage:
    return dataclasses.replace(usage, claim_clusters=frozenset(clusters))


def test_a_cluster_whose_claims_were_billed_and_show_no_claim_series_now_is_missing_claims() -> None:
    usage = with_claims(chunk(["a", "b", "c"]), ["b"])
    with pytest.raises(MissingClusters) as held:
        check(usage, {}, publish_empty=False, claims={"a": T0, "b": T0})
    assert held.value.missing == {"a": ("claims",)}
    message = str(held.value)
    assert message.startswith(f"period {PERIOD}: cluster a: usage and requests but no claim series")
    assert "resources.storage.clusters_without_claims" in message and "\n" not in message
    check(usage, {}, publish_empty=False, claims={"b": T0})  # b shows its claims: complete
    check(usage, {}, publish_empty=False)  # nothing billed before: no claims expected


def test_a_cluster_lacking_requests_is_told_as_that_not_as_missing_claims() -> None:
    with pytest.raises(MissingClusters) as held:
        check(chunk(["a"], no_requests=["a"]), {}, publish_empty=False, claims={"a": T0})
    assert held.value.missing == {"a": ("requests",)}
    empty = PeriodUsage(PERIOD, 10, "pod", (), {}, clusters=frozenset(["a"]))
    check(empty, {"a": T0}, publish_empty=True, claims={"a": T0})  # an empty cluster, opted in


def test_the_checkpoint_keeps_the_clusters_whose_claims_were_published_and_forgets_released_ones(
        ) -> None:
    source = Chunked(with_claims(chunk(["a", "b"]), ["a"]), with_claims(chunk(["c"]), ["c"]))
    clock = FakeClock(PERIOD.end + 600)
    cfg = Config.model_validate({"resources": {"storage": {"clusters_without_claims": ["b"]}}})
    pipeline = build_pipeline(cfg, clock, source=source)
    sink = MemorySink(MemoryBroker(), transactional_id="t")
    sink.start()
    summary = pipeline.export(PERIOD, sink, "t", published={}, claims={"b": T0, "d": T0 - 3600})
    # a and c billed claims now; b is released by the configuration; d is not in the period's
    # clusters but stays expected (its cluster is, too: the period would be held without it).
    assert summary.claims == {"a": PERIOD.end, "c": PERIOD.end, "d": T0 - 3600}
    off = dataclasses.replace(pipeline, storage=False)  # claims not charged: nothing expected
    summary = off.export(PERIOD, sink, "t", published={}, claims={"b": T0})
    assert summary.claims == {}

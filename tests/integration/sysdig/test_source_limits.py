"""Sysdig's service limits, end to end: the real sdcclient against the simulator, whose limits
are lowered so that a small fleet reaches them. The source measures a period in cluster groups
sized from a pre-count, splits a group whose query still reaches a limit, and holds the period
when one cluster alone does: the result is the exact ground truth, or nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from chargeback_simulator.server import Latency, SimulatorServer
from exporter.errors import LimitExceeded
from exporter.limits import group_clusters, selectors
from exporter.model import PeriodUsage
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import charge_lines
from exporter.sysdig import ShardSource, SysdigSource
from exporter.wiring import build_source, build_usage_source
from tests.integration.sysdig.test_source_ground_truth import assert_equals_ground_truth
from tests.rigs.sim import T0, TOKEN, H, LateCluster, Sim

PERIOD = Period(T0 + H, T0 + 2 * H)
PRECOUNT = "sum by (kube_cluster_name) (count by (kube_cluster_name)"
LISTING = "count by (kube_cluster_name) (count_over_time("  # a hash shard's clusters


def limited(sim: Sim, **sysdig: Any) -> SysdigSource:
    """The configured source of `sim`, with `sysdig` keys (limits, group size) set."""
    return build_source(sim.config(sysdig=sysdig), sim.clock)


def series_per_cluster(sim: Sim) -> dict[str, int]:
    """The pre-count's answer, straight from the simulator."""
    got = limited(sim)._count(PERIOD, PERIOD.end - 5)[0]
    assert len(got) == sim.fleet.spec.clusters
    return got


def assert_exact(sim: Sim, usage: PeriodUsage) -> None:
    lines = charge_lines(usage, OrgModel(sim.config().org))
    assert lines
    assert_equals_ground_truth(sim.fleet, PERIOD, lines)


def test_groups_sized_below_the_limits_are_disjoint_ordered_and_add_up_to_the_ground_truth(
        sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=5, namespaces_per_cluster=2, workloads_per_namespace=3)
    counts = series_per_cluster(sim)
    # Room for two clusters' series per group at most, with the 20 % margin.
    cap = int(2 * max(counts.values()) / 0.8) + 1
    sim.server.segment_cap = cap
    sim.server.stats.clear()
    source = limited(sim, limits={"segments": cap}, group_series=int(cap * 0.8))
    chunks = list(source.fetch_chunks(PERIOD))
    assert len(chunks) >= 3
    covered = [sorted(c.clusters) for c in chunks]
    assert covered == sorted(covered)  # in order of first cluster
    flat = [cluster for group in covered for cluster in group]
    assert flat == sorted(counts)  # disjoint, every cluster once
    for chunk in chunks:
        assert {w.key.cluster for w in chunk.workloads} <= chunk.clusters
        assert chunk.usage_clusters == chunk.clusters
    # Every query was answered whole, below the cap with its margin.
    answered = list(sim.server.stats)
    assert answered and {s.status for s in answered} == {200}
    assert max(s.series for s in answered) <= 0.8 * cap
    assert_exact(sim, source.fetch(PERIOD))


def test_a_group_cut_at_sysdigs_cap_is_split_and_measured_exactly(
        sim_factory: Callable[..., Sim]) -> None:
    """The pre-count says every cluster is tiny (an adversarial, late answer), so one group is
    made; Sysdig caps its answers silently; the source sees the cap and splits the group."""
    sim = sim_factory(seed=5, clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    counts = series_per_cluster(sim)
    cap = max(counts.values()) + 1
    sim.server.segment_cap = cap
    tiny = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"kube_cluster_name": c}, "value": [PERIOD.end - 5, "1"]} for c in counts]}}
    sim.server.faults.push("/prometheus", status=200, body=tiny, query=PRECOUNT)
    source = limited(sim, limits={"segments": cap, "margin": 0.05}, group_series=1)
    chunks = list(source.fetch_chunks(PERIOD))
    assert [sorted(c.clusters) for c in chunks] == [[c] for c in sorted(counts)]
    assert sim.server.faults.pending() == 0
    merged = chunks  # exact, cluster by cluster
    assert_exact(sim, _merge(merged))


def test_a_group_that_times_out_is_split_until_each_query_finishes(
        sim_factory: Callable[..., Sim]) -> None:
    """Sysdig's time grows with the samples a query scans: a query over two clusters takes
    longer than the query timeout, one over a single cluster does not."""
    sim = sim_factory(seed=5, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=3)
    slept: list[float] = []
    sim.server._sleep = slept.append  # a remote service's time, not the test's
    cfg = sim.config()
    clusters = sorted(series_per_cluster(sim))
    whole = max(s.samples for s in _stats_of(sim, lambda: build_source(cfg, sim.clock).fetch(PERIOD))
                if PRECOUNT not in s.query)
    pre = max(s.samples for s in sim.server.stats if PRECOUNT in s.query)
    single = max(max(s.samples for s in _stats_of(sim, lambda c=c: build_source(  # type: ignore[misc]
        sim.config(sysdig={"clusters": [c]}), sim.clock).fetch(PERIOD)) if PRECOUNT not in s.query)
        for c in clusters)
    assert max(pre, single) < whole
    # 1 s base; the timeout (30 s) falls between the slowest query of one cluster (or the
    # pre-count) and the slowest of both clusters.
    rate = (whole + max(pre, single)) / 2 / 29
    sim.server.latency = Latency(base=1.0, samples_per_second=rate)
    slept.clear()
    chunks = list(build_source(cfg, sim.clock).fetch_chunks(PERIOD))
    assert len(chunks) == 2
    assert 30.0 in slept  # a query given up at the timeout
    assert all(s <= 30.0 for s in slept)
    assert_exact(sim, _merge(chunks))


def test_one_cluster_alone_at_a_limit_holds_the_period_naming_it(
        sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=2)
    counts = series_per_cluster(sim)
    sim.server.segment_cap = 3
    source = limited(sim, limits={"segments": 3, "margin": 0.5}, group_series=1)
    with pytest.raises(LimitExceeded) as caught:
        list(source.fetch_chunks(PERIOD))
    message = str(caught.value)
    assert f"cluster {sorted(counts)[0]!r} alone reaches a Sysdig service limit" in message
    assert "held" in message and "\n" not in message


def test_groups_are_fetched_a_bounded_number_ahead(sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=5, namespaces_per_cluster=1, workloads_per_namespace=2)
    counts = series_per_cluster(sim)
    source = limited(sim, group_series=1, prefetch_groups=1)  # one cluster per group
    queries = len(source.plan_for(PERIOD)[0].all())
    sim.server.clear_requests()
    chunks = source.fetch_chunks(PERIOD)
    first = next(chunks)
    assert sorted(first.clusters) == [sorted(counts)[0]]
    # The pre-count, the first group and one group ahead: nothing more while the first is held.
    assert len(sim.server.requests) <= 1 + 2 * queries
    rest = list(chunks)
    assert len(rest) == len(counts) - 1
    assert len(sim.server.requests) == 1 + len(counts) * queries


def test_a_configured_cluster_without_series_is_covered_by_the_last_chunk(
        sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=3, namespaces_per_cluster=1, workloads_per_namespace=2)
    counts = series_per_cluster(sim)
    configured = [*sorted(counts), "zz-gone"]
    source = limited(sim, clusters=configured, group_series=max(counts.values()))
    chunks = list(source.fetch_chunks(PERIOD))
    assert "zz-gone" in chunks[-1].clusters
    assert all("zz-gone" not in c.clusters for c in chunks[:-1])
    assert "zz-gone" not in chunks[-1].usage_clusters
    assert _merge(chunks).coverage["zz-gone"] == 0


def _merge(chunks: list[PeriodUsage]) -> PeriodUsage:
    from exporter.sysdig.source import merge

    return merge(chunks)


def _stats_of(sim: Sim, call: Callable[[], object]) -> list[Any]:
    before = len(sim.server.stats)
    call()
    return list(sim.server.stats)[before:]


# --- the next period's groups, planned from the previous pre-count --------------------------

def _watch(sim: Sim, on_query: Callable[[str], None]) -> None:
    """Call `on_query(text)` in the server's thread as each PromQL query arrives, before it
    is answered."""
    handle = sim.server.handle

    def watching(method: str, path: str, query: Any, headers: Any, body: bytes) -> Any:
        if "query" in query:
            on_query(query["query"][-1])
        return handle(method, path, query, headers, body)

    sim.server.handle = watching  # type: ignore[method-assign]


def test_with_previous_counts_the_groups_queries_do_not_wait_for_the_pre_count(
        sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=3, namespaces_per_cluster=1, workloads_per_namespace=2)
    source = limited(sim, group_series=1)  # one cluster per group
    arrivals: list[str] = []
    group_query = threading.Event()
    hold = False
    answered_after_a_group_query: list[bool] = []

    def on_query(text: str) -> None:
        if PRECOUNT in text:
            arrivals.append("pre-count")
            if hold:  # answer only once a group's query reached Sysdig (or give up)
                answered_after_a_group_query.append(group_query.wait(timeout=20))
        else:
            arrivals.append("group")
            group_query.set()

    _watch(sim, on_query)
    first = list(source.fetch_chunks(Period(T0, T0 + H)))  # no counts yet: pre-count first
    assert arrivals[0] == "pre-count" and arrivals.count("pre-count") == 1
    assert len(first) == 3
    arrivals.clear()
    group_query.clear()
    hold = True
    chunks = list(source.fetch_chunks(PERIOD))
    assert answered_after_a_group_query == [True]
    assert arrivals.count("pre-count") == 1
    assert [sorted(c.clusters) for c in chunks] == [sorted(c.clusters) for c in first]
    assert_exact(sim, _merge(chunks))


def test_a_hash_shard_plans_from_its_previous_counts_too(sim_factory: Callable[..., Sim]) -> None:
    """A hash shard finds its clusters every period; while they stay the same it keeps its
    source, so its second period's group queries do not wait for the pre-count either."""
    sim = sim_factory(seed=5, clusters=3, namespaces_per_cluster=1, workloads_per_namespace=2)
    cfg = sim.config(sysdig={"group_series": 1}, shard={"name": "all", "index": 0, "count": 1})
    assert cfg.discovers_clusters
    source = build_usage_source(cfg, sim.clock)
    assert isinstance(source, ShardSource)
    group_query = threading.Event()
    hold = False
    answered_after_a_group_query: list[bool] = []

    def on_query(text: str) -> None:
        if PRECOUNT in text:
            if hold:  # answer only once a group's query reached Sysdig (or give up)
                answered_after_a_group_query.append(group_query.wait(timeout=20))
        elif not text.startswith(LISTING):
            group_query.set()

    _watch(sim, on_query)
    list(source.fetch_chunks(Period(T0, T0 + H)))  # no counts yet: pre-count first
    group_query.clear()
    hold = True
    chunks = list(source.fetch_chunks(PERIOD))
    assert answered_after_a_group_query == [True]
    assert_exact(sim, _merge(chunks))


def test_a_cluster_that_joins_between_periods_gets_a_group_and_is_measured_exactly(
        sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=3, namespaces_per_cluster=2, workloads_per_namespace=2)
    late = sorted(sim.fleet.clusters())[1]  # between the others: its group interleaves theirs
    others = sorted(c for c in sim.fleet.clusters() if c != late)
    sim.fleet = LateCluster(sim.fleet, late, since=PERIOD.start)  # type: ignore[assignment]
    with SimulatorServer(sim.fleet, sim.clock, tokens=[TOKEN]) as server:
        sim.server = server
        source = limited(sim, group_series=2 * max(series_per_cluster(sim).values()))
        before = Period(PERIOD.start - H, PERIOD.start)
        chunks = list(source.fetch_chunks(before))
        assert [sorted(c.clusters) for c in chunks] == [others]
        lines = charge_lines(_merge(chunks), OrgModel(sim.config().org))
        assert_equals_ground_truth(sim.fleet, before, lines)
        chunks = list(source.fetch_chunks(PERIOD))
        # The planned group is kept; the new cluster has its own, fetched after it.
        assert [sorted(c.clusters) for c in chunks] == [others, [late]]
        for chunk in chunks:
            assert {w.key.cluster for w in chunk.workloads} <= chunk.clusters
        merged = _merge(chunks)
        keys = [w.key for w in merged.workloads]
        assert keys == sorted(keys)  # interleaved chunks merge in workload order
        assert_exact(sim, merged)


def test_a_group_planned_from_counts_that_grew_is_regrouped_and_measured_exactly(
        sim_factory: Callable[..., Sim]) -> None:
    sim = sim_factory(seed=5, clusters=4, namespaces_per_cluster=2, workloads_per_namespace=3)
    counts = series_per_cluster(sim)
    before = Period(PERIOD.start - H, PERIOD.start)
    # The previous period's pre-count says every cluster is tiny: one group is planned.
    sim.server.faults.push("/prometheus", status=200, query=PRECOUNT, body={
        "status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"kube_cluster_name": c}, "value": [before.end - 5, "1"]}
            for c in counts]}})
    budget = 2 * max(counts.values())
    source = limited(sim, group_series=budget)
    assert [sorted(c.clusters) for c in source.fetch_chunks(before)] == [sorted(counts)]
    assert sim.server.faults.pending() == 0
    chunks = list(source.fetch_chunks(PERIOD))
    covered = [tuple(sorted(c.clusters)) for c in chunks]
    assert len(covered) >= 2
    assert covered == group_clusters(counts, limits=source._limits,
                                     period_seconds=H, scans=_scans(source))
    for group in covered:
        assert len(group) == 1 or sum(counts[c] for c in group) <= budget
    assert_exact(sim, _merge(chunks))


def test_the_next_groups_queries_are_in_flight_while_the_consumer_holds_a_chunk(
        sim_factory: Callable[..., Sim]) -> None:
    """Sysdig's time is modelled by holding the second group's answers until the consumer has
    the first chunk: they must have been asked for by then, without the consumer asking."""
    sim = sim_factory(seed=5, clusters=2, namespaces_per_cluster=1, workloads_per_namespace=2)
    source = limited(sim, group_series=1, prefetch_groups=1)
    list(source.fetch_chunks(Period(T0, T0 + H)))  # counts for the next period
    second = sorted(sim.fleet.clusters())[1]
    asked = threading.Event()
    consumer_has_first = threading.Event()

    def on_query(text: str) -> None:
        if f'kube_cluster_name=~"{second}"' in text:
            asked.set()
            consumer_has_first.wait(timeout=20)

    _watch(sim, on_query)
    chunks = source.fetch_chunks(PERIOD)
    first = next(chunks)
    assert second not in first.clusters
    in_flight = asked.wait(timeout=20)
    consumer_has_first.set()
    assert in_flight
    rest = list(chunks)
    assert [sorted(c.clusters) for c in rest] == [[second]]
    assert_exact(sim, _merge([first, *rest]))


def _scans(source: SysdigSource) -> int:
    return max(len(selectors(q)) for _, q in source.plan_for(PERIOD, ("",))[0].all())

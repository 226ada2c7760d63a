"""The PromQL evaluator: hand-computed small cases, then the exporter's plan against ground truth."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chargeback_simulator.fleet import CPU_QUANTUM, MIB, Fleet, FleetSpec
from chargeback_simulator.promql import (
    Engine,
    QueryExecutionError,
    QueryParseError,
    QueryResult,
    QueryTimeout,
    QueryUnsupported,
)
from chargeback_simulator.series import MemoryStorage
from exporter.clock import FakeClock
from exporter.model import WorkloadKey
from exporter.queries import label_columns, plan
from tests.rigs.small_fleet import NOW, SMALL, T0, TIMELINES

ORG = ["costcenter", "businessunit", "department", "team"]


def _vector(result: QueryResult) -> dict[tuple[tuple[str, str], ...], float]:
    assert result.kind == "vector" and result.series is not None
    return {tuple(sorted(lb.items())): float(row[-1])
            for lb, row in zip(result.series.labels, result.series.values, strict=True)}


def _one(result: QueryResult) -> float:
    values = list(_vector(result).values())
    assert len(values) == 1, values
    return values[0]


@pytest.fixture
def store() -> MemoryStorage:
    s = MemoryStorage()
    # m{a}: samples every 10 s; m{b}: sparse; n: constant 5 over the same steps as m{a}.
    s.add({"__name__": "m", "pod": "a", "team": "x"}, [(t, t / 10) for t in range(0, 100, 10)])
    s.add({"__name__": "m", "pod": "b", "team": "x"}, [(0, 10), (20, 30)])
    s.add({"__name__": "m", "pod": "ab", "team": "y"}, [(50, 7)])
    s.add({"__name__": "n", "pod": "a", "team": "x"}, [(t, 5) for t in range(0, 100, 10)])
    return s


def test_instant_selector_takes_latest_sample_within_left_open_lookback() -> None:
    s = MemoryStorage()
    s.add({"__name__": "m"}, [(1000, 1), (1290, 2)])
    e = Engine(s)
    assert _one(e.instant("m", 1290)) == 2
    assert _one(e.instant("m", 1589)) == 2  # 299 s after the last sample: still visible
    assert _vector(e.instant("m", 1590)) == {}  # exactly 300 s: (t-5m, t] excludes it
    assert _one(e.instant("m", 1299.999)) == 2
    assert _one(e.instant("m", 1289.999)) == 1


def test_range_selectors_are_left_open(store: MemoryStorage) -> None:
    e = Engine(store)
    # (30-30, 30] holds 10, 20, 30 but not 0
    assert _one(e.instant('count_over_time(m{pod="a"}[30s])', 30)) == 3
    assert _one(e.instant('sum_over_time(m{pod="a"}[30s])', 30)) == 1 + 2 + 3
    assert _one(e.instant('max_over_time(m{pod="a"}[30s])', 30)) == 3
    assert _one(e.instant('min_over_time(m{pod="a"}[30s])', 30)) == 1
    assert _one(e.instant('avg_over_time(m{pod="a"}[30s])', 30)) == 2
    assert _one(e.instant('last_over_time(m{pod="b"}[30s])', 35)) == 30
    assert _vector(e.instant('last_over_time(m{pod="b"}[5s])', 35)) == {}
    # range functions drop the metric name
    result = e.instant('count_over_time(m{pod="a"}[30s])', 30)
    assert result.series is not None and result.series.labels == [{"pod": "a", "team": "x"}]


def test_subquery_steps_are_absolute_multiples_of_the_step(store: MemoryStorage) -> None:
    e = Engine(store)
    # At t=37 with [25s:10s]: steps are multiples of 10 in [12, 37] -> 20, 30.
    assert _one(e.instant('count_over_time((m{pod="a"})[25s:10s])', 37)) == 2
    assert _one(e.instant('sum_over_time((m{pod="a"})[25s:10s])', 37)) == 2 + 3
    # At t=40 with [20s:10s]: steps in [20, 40] are 20, 30, 40; the window (20, 40] drops 20.
    assert _one(e.instant('sum_over_time((m{pod="a"})[20s:10s])', 40)) == 3 + 4
    # Subquery steps use the 5-minute lookback: pod b has samples at 0 and 20 only.
    assert _one(e.instant('sum_over_time((m{pod="b"})[30s:10s])', 30)) == 10 + 30 + 30
    # last_over_time[5s] inside replaces the lookback: only steps that have a sample count.
    assert _one(e.instant('sum_over_time((last_over_time(m{pod="b"}[5s]))[30s:10s])', 35)) == 30
    # A subquery step of 7 s: multiples of 7 in [5, 35] -> 7, 14, 21, 28, 35.
    assert _one(e.instant('count_over_time((m{pod="a"})[30s:7s])', 35)) == 5


def test_max_of_request_and_usage_with_or_and_ge() -> None:
    s = MemoryStorage()
    # U and R per step: both present, U bigger / R bigger, only R, only U, neither.
    u = {0: 4, 10: 1, 30: 6}
    r = {0: 2, 10: 3, 20: 5}
    s.add({"__name__": "u", "pod": "p"}, u.items())
    s.add({"__name__": "r", "pod": "p"}, r.items())
    e = Engine(s)
    per_step = "(last_over_time(u[5s]) >= last_over_time(r[5s])) or last_over_time(r[5s]) " \
               "or last_over_time(u[5s])"
    total = _one(e.instant(f"sum_over_time(({per_step})[50s:10s])", 45))  # steps 0..40
    assert total == max(4, 2) + max(1, 3) + 5 + 6 + 0
    # The comparison filter keeps the left-hand value; `bool` gives 0/1 and drops the name.
    assert _vector(e.instant("u >= r", 0)) == {(("__name__", "u"), ("pod", "p")): 4.0}
    assert _vector(e.instant("u >= bool r", 10)) == {(("pod", "p"),): 0.0}


def test_regex_matchers_are_anchored(store: MemoryStorage) -> None:
    e = Engine(store)
    pods = lambda q: sorted(dict(k)["pod"] for k in _vector(e.instant(q, 50)))  # noqa: E731
    assert pods('m{pod=~"a"}') == ["a"]
    assert pods('m{pod=~"a|b"}') == ["a", "b"]
    assert pods('m{pod=~"a.*"}') == ["a", "ab"]
    assert pods('m{pod!~"a"}') == ["ab", "b"]
    assert pods('m{pod!="a"}') == ["ab", "b"]
    assert pods('m{missing=""}') == ["a", "ab", "b"]  # an absent label matches ""
    assert pods('m{missing!=""}') == []
    assert pods('{__name__=~"m|n", pod="a"}') == ["a", "a"]


def test_aggregations_by_and_without(store: MemoryStorage) -> None:
    e = Engine(store)
    at = 50  # m: a=5, b=30 (lookback), ab=7
    assert _vector(e.instant("sum by (team) (m)", at)) == {(("team", "x"),): 35.0,
                                                          (("team", "y"),): 7.0}
    assert _vector(e.instant("max without (pod) (m)", at)) == {(("team", "x"),): 30.0,
                                                              (("team", "y"),): 7.0}
    assert _one(e.instant("min(m)", at)) == 5
    assert _one(e.instant("count(m)", at)) == 3
    assert _one(e.instant("avg(m)", at)) == 14
    assert _vector(e.instant("count by (nothing) (m)", at)) == {(): 3.0}


def test_topk_and_bottomk_keep_the_series_labels(store: MemoryStorage) -> None:
    e = Engine(store)
    at = 50  # m: a=5, b=30 (lookback), ab=7
    assert _vector(e.instant("topk(1, m)", at)) == {
        (("__name__", "m"), ("pod", "b"), ("team", "x")): 30.0}
    assert _vector(e.instant("bottomk(2, m)", at)) == {
        (("__name__", "m"), ("pod", "a"), ("team", "x")): 5.0,
        (("__name__", "m"), ("pod", "ab"), ("team", "y")): 7.0}
    assert {dict(k)["pod"] for k in _vector(e.instant("topk by (team) (1, m)", at))} == {"b", "ab"}
    assert len(_vector(e.instant("topk(10, m)", at))) == 3
    assert _vector(e.instant("topk(0, m)", at)) == {}
    r = e.range('topk(1, m{team="x"})', 0, 20, 10)  # a: 0,1,2; b: 10,10,30 (lookback)
    assert r.series is not None
    assert {lb["pod"]: row.tolist() for lb, row in zip(r.series.labels, r.series.values,
                                                       strict=True)} == {"b": [10.0, 10.0, 30.0]}


def test_binary_operators(store: MemoryStorage) -> None:
    e = Engine(store)
    assert _vector(e.instant('m{pod="a"} * 2', 30)) == {(("pod", "a"), ("team", "x")): 6.0}
    assert _vector(e.instant('10 - m{pod="a"}', 30)) == {(("pod", "a"), ("team", "x")): 7.0}
    assert _vector(e.instant('m{pod="a"} / n', 30)) == {(("pod", "a"), ("team", "x")): 0.6}
    assert _vector(e.instant("m + on (pod) n", 30)) == {(("pod", "a"),): 8.0}
    assert _vector(e.instant("m - ignoring (team) n", 30)) == {(("pod", "a"),): -2.0}
    assert _vector(e.instant("2 < m", 50)) == {
        (("__name__", "m"), ("pod", "a"), ("team", "x")): 5.0,
        (("__name__", "m"), ("pod", "ab"), ("team", "y")): 7.0,
        (("__name__", "m"), ("pod", "b"), ("team", "x")): 30.0}
    assert len(_vector(e.instant("m > bool 6", 50))) == 3
    assert set(dict(k)["pod"] for k in _vector(e.instant("m and n", 50))) == {"a"}
    assert set(dict(k)["pod"] for k in _vector(e.instant("m unless n", 50))) == {"b", "ab"}
    assert set(dict(k)["pod"] for k in _vector(e.instant("m and on (team) n", 50))) == {"a", "b"}
    with pytest.raises(QueryExecutionError, match="many-to-many"):
        e.instant("n + on (team) m", 50)


def test_scalar_results_and_functions(store: MemoryStorage) -> None:
    e = Engine(store)
    r = e.instant("1 + 2 * 3", 40)
    assert r.kind == "scalar" and r.scalar is not None and float(r.scalar.values[0]) == 7
    assert e.instant("time()", 40).scalar is not None
    assert _one(e.instant("vector(3)", 40)) == 3
    assert _one(e.instant("-sum(n)", 40)) == -5


def test_label_replace_sets_copies_or_removes_a_label_as_prometheus_does(
        store: MemoryStorage) -> None:
    e = Engine(store)
    # A full (anchored) match sets dst from the template; the metric name stays.
    assert _vector(e.instant('label_replace(m{pod="ab"}, "c", "$1-${2}", "pod", "(a)(b)")', 50)) == {
        (("__name__", "m"), ("c", "a-b"), ("pod", "ab"), ("team", "y")): 7.0}
    # No match (the regex is anchored): the series is unchanged.
    assert _vector(e.instant('label_replace(m{pod="ab"}, "c", "$1", "pod", "a")', 50)) == {
        (("__name__", "m"), ("pod", "ab"), ("team", "y")): 7.0}
    # `(.+)` does not match an absent source, so an existing dst is kept; `(.*)` empties it.
    kept = 'label_replace(label_replace(n, "c", "k", "", ""), "c", "$1", "nope", "(.+)")'
    assert {dict(k).get("c") for k in _vector(e.instant(kept, 50))} == {"k"}
    emptied = 'label_replace(label_replace(n, "c", "k", "", ""), "c", "$1", "nope", "(.*)")'
    assert [dict(k).get("c") for k in _vector(e.instant(emptied, 50))] == [None]
    # Named groups, `$$`, and `$1x` read as the (absent) group named "1x", as Go expands them.
    named = r'label_replace(n, "c", "$$${x}.$1x.$team", "pod", "(?P<x>a)")'
    assert {dict(k)["c"] for k in _vector(e.instant(named, 50))} == {"$a.."}
    # Moving a label onto another series' label set is Prometheus' duplicate-labelset error.
    with pytest.raises(QueryExecutionError, match="same labelset"):
        e.instant('label_replace(sum by (pod) (m), "pod", "same", "pod", ".*")', 50)
    with pytest.raises(QueryExecutionError, match="invalid destination label name"):
        e.instant('label_replace(m, "1bad", "x", "pod", ".*")', 50)
    with pytest.raises(QueryExecutionError, match="invalid regular expression"):
        e.instant('label_replace(m, "c", "x", "pod", "(")', 50)


def test_label_replace_then_sum_joins_on_the_new_label() -> None:
    """The exporter's container join: usage names its container in another label."""
    s = MemoryStorage()
    s.add({"__name__": "u", "pod": "p", "container_label_io_kubernetes_container_name": "app"},
          [(10, 1)])
    s.add({"__name__": "r", "pod": "p", "kube_pod_container_name": "app"}, [(10, 3)])
    u = ('sum by (pod, kube_pod_container_name) (label_replace(u, "kube_pod_container_name", '
         '"$1", "container_label_io_kubernetes_container_name", "(.+)"))')
    r = "sum by (pod, kube_pod_container_name) (r)"
    assert _vector(Engine(s).instant(f"({u} >= {r}) or {r} or {u}", 10)) == {
        (("kube_pod_container_name", "app"), ("pod", "p")): 3.0}


def test_top_level_range_vector_in_an_instant_query(store: MemoryStorage) -> None:
    r = Engine(store).instant('m{pod="a"}[25s]', 30)
    assert r.kind == "matrix" and r.series is not None
    assert (r.series.ts // 1000).tolist() == [10, 20, 30]
    assert r.series.values.tolist() == [[1.0, 2.0, 3.0]]


def test_errors_are_typed(store: MemoryStorage) -> None:
    e = Engine(store)
    with pytest.raises(QueryParseError, match="parse error"):
        e.instant("sum(", 0)
    with pytest.raises(QueryParseError):
        e.instant("", 0)
    with pytest.raises(QueryParseError):
        e.range("m[5m]", 0, 60, 10)
    for query in ("rate(m[5m])", "quantile(0.5, m)", "m @ 10"):
        with pytest.raises(QueryUnsupported):
            e.instant(query, 60)


def test_timeout_uses_the_injected_timer(store: MemoryStorage) -> None:
    ticks = itertools.count()
    e = Engine(store, timer=lambda: float(next(ticks)))
    with pytest.raises(QueryTimeout):
        e.instant("sum(sum_over_time(m[1m]))", 60, timeout=1.5)
    assert _one(Engine(store).instant("sum(m)", 60, timeout=5)) > 0


def test_range_query_equals_instant_queries(store: MemoryStorage) -> None:
    e = Engine(store)
    query = "sum by (team) (m) or sum_over_time(n[20s])"
    result = e.range(query, 0, 90, 15)
    assert result.kind == "matrix" and result.series is not None
    for j, t in enumerate(result.series.ts):
        instant = _vector(e.instant(query, int(t) / 1000))
        column = {tuple(sorted(lb.items())): float(row[j])
                  for lb, row in zip(result.series.labels, result.series.values, strict=True)
                  if not np.isnan(row[j])}
        assert column == instant


def _by_workload(result: QueryResult) -> dict[WorkloadKey, float]:
    assert result.series is not None
    return {WorkloadKey(lb["kube_cluster_name"], lb["kube_namespace_name"],
                        lb["kube_workload_type"], lb["kube_workload_name"]): float(row[-1])
            for lb, row in zip(result.series.labels, result.series.values, strict=True)}


@pytest.mark.parametrize("grain", ["pod", "container"])
@pytest.mark.parametrize("hour", [0, 3, 6])  # hour 6 is the partial one, cut at NOW
def test_plan_queries_equal_ground_truth(grain: str, hour: int) -> None:
    fleet = Fleet(FleetSpec(seed=5, clusters=2, namespaces_per_cluster=3,
                            workloads_per_namespace=4), clock=FakeClock(NOW), timelines=TIMELINES)
    start = T0 + hour * 3600
    queries = plan(3600, 10, grain, columns=label_columns(ORG, ORG))
    truth = fleet.sample_sums(start, start + 3600, grain)  # type: ignore[arg-type]
    e = Engine(fleet)
    t = start + 3600 - 5
    for res, scale in (("cpu", CPU_QUANTUM), ("memory", 1 / MIB)):
        for field, q in (("usage", queries.usage[res]), ("request", queries.request[res]),
                         ("chargeable", queries.chargeable[res])):
            got = _by_workload(e.instant(q, t))
            expected = {k: getattr(v[res], field) for k, v in truth.items()  # type: ignore[index]
                        if getattr(v[res], field)}  # type: ignore[index]
            assert {k: int(v * scale) for k, v in got.items() if v} == expected, (res, field)
            assert all(v * scale == int(v * scale) for v in got.values())
    labels = e.instant(queries.labels, t)
    assert labels.series is not None
    assert {WorkloadKey(lb["kube_cluster_name"], lb["kube_namespace_name"],
                        lb["kube_workload_type"], lb["kube_workload_name"])
            for lb in labels.series.labels} == set(truth)
    assert fleet.special["unallocated"] in truth


def _per_cluster(result: QueryResult) -> dict[str, float]:
    assert result.series is not None
    return {lb["kube_cluster_name"]: float(row[-1])
            for lb, row in zip(result.series.labels, result.series.values, strict=True)}


@pytest.mark.parametrize(("grain", "chargeable"), [("pod", 5.0), ("container", 5.5)])
def test_plan_bills_a_request_only_at_steps_where_its_pod_has_usage(
        grain: str, chargeable: float) -> None:
    """Pod p is Pending at 0 and 10, runs 20 to 40 (usage of `app` only) and is Completed at 50;
    kube-state-metrics reports the requests of `app` (1 core) and `side` (0.5 core) throughout.
    Cluster c2 shows only a finished pod's request series."""
    s = MemoryStorage()
    pod = {"kube_cluster_name": "c1", "kube_namespace_name": "n", "kube_workload_type": "job",
           "kube_workload_name": "w", "kube_pod_name": "p"}
    s.add({**pod, "__name__": "sysdig_container_cpu_cores_used",
           "container_label_io_kubernetes_container_name": "app"},
          [(20, 0.25), (30, 2.0), (40, 0.25)])
    for container, cores in (("app", 1.0), ("side", 0.5)):
        s.add({**pod, "__name__": "kube_pod_container_resource_requests", "resource": "cpu",
               "kube_pod_container_name": container}, [(t, cores) for t in range(0, 60, 10)])
    s.add({**pod, "kube_cluster_name": "c2", "__name__": "kube_pod_container_resource_requests",
           "resource": "cpu", "kube_pod_container_name": "app"}, [(t, 2) for t in range(0, 60, 10)])
    queries = plan(60, 10, grain)
    e = Engine(s)
    key = WorkloadKey("c1", "n", "job", "w")
    assert _by_workload(e.instant(queries.usage["cpu"], 55)) == {key: 2.5}
    # 20, 30, 40: 1.5 core each; `side` has no usage sample but its pod runs.
    assert _by_workload(e.instant(queries.request["cpu"], 55)) == {key: 4.5}
    # pod: 1.5 + 2 + 1.5; container: app 1 + 2 + 1, side 0.5 x 3
    assert _by_workload(e.instant(queries.chargeable["cpu"], 55)) == {key: chargeable}
    # Collection is unchanged: c2's kube-state-metrics reports, though nothing of it is billed;
    # c1 has usage and requests at three steps.
    assert _per_cluster(e.instant(queries.request_presence, 55)).keys() == {"c1", "c2"}
    assert _per_cluster(e.instant(queries.coverage, 55)) == {"c1": 3.0}


def test_plan_cluster_filter_selects_one_cluster() -> None:
    fleet = Fleet(SMALL, clock=FakeClock(NOW), timelines=TIMELINES)
    cluster = fleet.workloads()[0].key.cluster
    queries = plan(3600, 10, "pod", clusters=[cluster])
    e = Engine(fleet)
    got = _by_workload(e.instant(queries.chargeable["cpu"], T0 + 3595))
    assert got and {k.cluster for k in got} == {cluster}
    coverage = e.instant(queries.coverage, T0 + 3595)
    assert coverage.series is not None
    assert coverage.series.labels == [{"kube_cluster_name": cluster}]
    assert coverage.series.values[0, 0] == 360


def test_range_query_with_hourly_step_evaluates_each_period() -> None:
    fleet = Fleet(SMALL, clock=FakeClock(NOW), timelines=TIMELINES)
    e = Engine(fleet)
    q = plan(3600, 10, "pod").chargeable["memory"]
    result = e.range(q, T0 + 3595, T0 + 5 * 3600 - 5, 3600)
    assert result.series is not None and len(result.series.ts) == 5
    for j in range(5):
        start = T0 + j * 3600
        truth = fleet.sample_sums(start, start + 3600)
        column = {WorkloadKey(lb["kube_cluster_name"], lb["kube_namespace_name"],
                              lb["kube_workload_type"], lb["kube_workload_name"]): row[j]
                  for lb, row in zip(result.series.labels, result.series.values, strict=True)
                  if not np.isnan(row[j])}
        assert {k: int(v / MIB) for k, v in column.items()} == {
            k: v["memory"].chargeable for k, v in truth.items()}


def test_last_over_time_looks_back_within_its_window() -> None:
    s = MemoryStorage()
    s.add({"__name__": "m"}, [(0, 1), (10, 2), (30, 4)])
    e = Engine(s)
    # Subquery steps 0..30 each see the latest sample in (t-15, t]: step 20 still sees 10's.
    assert _one(e.instant("sum_over_time((last_over_time(m[15s]))[40s:10s])", 30)) == 1 + 2 + 2 + 4
    result = e.range("last_over_time(m[15s])", 0, 40, 10)
    assert result.series is not None
    assert result.series.values.tolist() == [[1.0, 2.0, 2.0, 4.0, 4.0]]

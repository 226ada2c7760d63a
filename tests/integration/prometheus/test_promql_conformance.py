"""The simulator's PromQL answers equal a real Prometheus' on the same samples.

Both engines are queried through the real sdcclient: the simulator directly, Prometheus through
the Sysdig-style proxy. Every query of `exporter.queries.plan(...)` is compared (label sets and
values, as the exact strings both servers print) for pod and container grain, with and without a
cluster filter, over periods before the data, at its start, in the middle, and at its edge.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sdcclient import SdMonitorClient

from chargeback_simulator import allocations as alloc
from chargeback_simulator.prometheus import SysdigPrometheusProxy
from chargeback_simulator.server import SimulatorServer
from exporter.queries import GpuNames, StorageNames, clusters_present, label_columns, plan

from .conftest import T0, ConformanceData

ORG = ["costcenter", "businessunit", "department", "team"]
PERIODS = {
    "before-data": T0 - 3600,  # nothing to find: both must agree on empty
    "first": T0,  # starts exactly at the first sample
    "middle": T0 + 3600,
    "edge": T0 + 2 * 3600,  # the data stops 40 minutes in
}
Client = SdMonitorClient
# Idle capacity's allocatable resource names: cpu, memory and the GPU nodes' devices.
ALLOCATABLE = ("cpu", "memory", *alloc.GPU_RESOURCES)
# The fleet's GPUs (whole and MIG, with DCGM utilisation) and claims, as the exporter names them.
GPUS = GpuNames(tuple(alloc.GPU_RESOURCES), alloc.GPU_UTIL)
CLAIMS = StorageNames(alloc.CAPACITY, alloc.CLAIM_INFO, alloc.MOUNTS, alloc.CLAIM_LABEL,
                      alloc.CLASS_LABEL)


@pytest.fixture(scope="module")
def clients(simulator: SimulatorServer, prometheus_proxy: SysdigPrometheusProxy,
            conformance_data: ConformanceData) -> tuple[Client, Client]:
    return (SdMonitorClient(token=conformance_data.token, sdc_url=simulator.url),
            SdMonitorClient(token=conformance_data.token, sdc_url=prometheus_proxy.url))


def _canonical(res: Any) -> tuple[str, dict[frozenset[tuple[str, str]], Any]]:
    data = res["data"]
    kind = data["resultType"]
    if kind == "vector":
        return kind, {frozenset(r["metric"].items()): tuple(r["value"]) for r in data["result"]}
    if kind == "matrix":
        return kind, {frozenset(r["metric"].items()): tuple(map(tuple, r["values"]))
                      for r in data["result"]}
    return kind, {frozenset(): tuple(data["result"])}


def _both(clients: tuple[Client, Client], method: str, *args: Any) -> tuple[Any, Any]:
    answers = []
    for c in clients:
        ok, res = getattr(c, method)(*args)
        assert ok, res
        answers.append(_canonical(res))
    return answers[0], answers[1]


@pytest.mark.parametrize("period", list(PERIODS))
@pytest.mark.parametrize("filtered", [False, True], ids=["all-clusters", "one-cluster"])
@pytest.mark.parametrize("grain", ["pod", "container"])
def test_plan_queries_agree(clients: tuple[Client, Client], conformance_data: ConformanceData,
                            grain: str, filtered: bool, period: str) -> None:
    fleet = conformance_data.fleet
    clusters = [fleet.workloads()[0].key.cluster] if filtered else []
    queries = plan(3600, 10, grain, clusters, label_columns(ORG, ORG), gpu=GPUS, storage=CLAIMS,
                   allocatable=ALLOCATABLE)
    assert {"gpu.request", "gpu.usage", "storage.request"} <= dict(queries.all()).keys()
    start = PERIODS[period]
    t = start + 3600 - 5  # the exporter's evaluation instant, end - step/2
    for name, query in queries.all():
        simulated, real = _both(clients, "get_data_promql_instant", query, t)
        assert simulated == real, f"{name} differs for {period}: {query}"
        if period != "before-data" and name != "coverage":
            assert simulated[1], f"{name} is empty for {period}"
    if period in ("first", "middle"):
        _, usage = _both(clients, "get_data_promql_instant", queries.usage["cpu"], t)
        names = {dict(k)["kube_workload_name"] for k in usage[1]}
        assert fleet.special["seven_minute_job"].name in names
        assert fleet.special["unallocated"].name in names


@pytest.mark.parametrize("period", ["middle", "edge"])
def test_allocatable_answers_equal_the_nodes_truth(clients: tuple[Client, Client],
                                                   conformance_data: ConformanceData,
                                                   period: str) -> None:
    """Nodes join and leave inside the hour; the real Prometheus integrates them per step to the
    exact allocatable of the simulator's ground truth (1/64 core and MiB quanta, devices, exact
    in float64), whole GPUs and MIG slices included."""
    fleet = conformance_data.fleet
    start = PERIODS[period]
    query = plan(3600, 10, allocatable=ALLOCATABLE).allocatable
    assert query is not None
    _, real = _both(clients, "get_data_promql_instant", query, start + 3600 - 5)
    truth = fleet.allocatable_sums(start, start + 3600)
    got = {(dict(k)["kube_cluster_name"], dict(k)["resource"]): Decimal(v[1])
           for k, v in real[1].items()}
    names = {charged: name for name, charged in alloc.GPU_RESOURCES.items()}
    scale = {"cpu": Decimal(1) / 64, "memory": Decimal(2**20)}
    assert got == {(c, names.get(r, r)): Decimal(n) * scale.get(r, Decimal(1))
                   for c, per in truth.items() for r, n in per.items()}
    assert {r for _, r in got} == set(ALLOCATABLE)
    moving = [n for n in fleet.nodes(start, start + 3600) if start < n.start < start + 3600
              or start < n.end < start + 3600]
    assert moving or period == "edge"


@pytest.mark.parametrize("grain", ["pod", "container"])
def test_plan_queries_over_query_range_agree(clients: tuple[Client, Client], grain: str) -> None:
    queries = plan(3600, 10, grain, columns=label_columns(ORG, ORG), gpu=GPUS, storage=CLAIMS,
                   allocatable=ALLOCATABLE)
    for name, query in queries.all():
        # Four hourly evaluations: before the data, two full hours, and the partial one.
        simulated, real = _both(clients, "get_data_promql", query, T0 - 5, T0 + 3 * 3600 - 5,
                                3600)
        assert simulated == real, f"{name}: {query}"
        assert simulated[1]


GENERIC = [
    "sum by (kube_cluster_name) (sysdig_container_cpu_cores_used)",
    'count by (kube_workload_type) (kube_pod_container_resource_requests{resource="memory"})',
    'max_over_time(sysdig_container_memory_used_bytes{kube_namespace_name=~"sim-.*"}[10m])',
    'min_over_time(sysdig_container_cpu_cores_used{kube_workload_type!~"deployment|job"}[7m])',
    "sum(sysdig_container_cpu_cores_used) / count(sysdig_container_cpu_cores_used)",
    'sysdig_container_cpu_cores_used{container_label_io_kubernetes_container_name!="app"} > 0.5',
    # Usage names its container in another label than requests: joined after label_replace.
    'label_replace(sysdig_container_cpu_cores_used, "kube_pod_container_name", "$1", '
    '"container_label_io_kubernetes_container_name", "(.+)") > bool on (kube_pod_name, '
    'kube_pod_container_name) kube_pod_container_resource_requests{resource="cpu"}',
    'label_replace(sysdig_container_cpu_cores_used, "kube_pod_container_name", "$1", '
    '"container_label_io_kubernetes_container_name", "(.+)") unless on (kube_pod_name, '
    'kube_pod_container_name) kube_pod_container_resource_requests{resource="cpu"}',
    "sum by (kube_namespace_name) (count_over_time(sysdig_container_cpu_cores_used[1h]))",
    # Subquery steps are multiples of 60 s, so a bare selector's 5-minute lookback would end
    # exactly on a sample (2.x includes it, 3.x and the simulator do not); `offset 5s` avoids it.
    "max by (kube_cluster_name) (sum_over_time((sum by (kube_cluster_name, kube_pod_name) "
    "(sysdig_container_memory_used_bytes offset 5s))[30m:1m]))",
    "-sum without (kube_pod_name, kube_pod_container_name) "
    '(kube_pod_container_resource_requests{resource="cpu"}) * 64',
    # A capture group, a name that does not match (unchanged) and one removed by an empty result.
    'count by (kube_workload_type, w) (label_replace(label_replace('
    'sysdig_container_memory_used_bytes, "w", "$1", "kube_workload_name", "(.+)-[0-9]+"), '
    '"kube_workload_type", "", "kube_workload_type", "deployment|daemonset"))',
    # The clusters a hash shard chooses its own from (exporter.sysdig.discovery).
    clusters_present(3600),
]


@pytest.mark.parametrize("query", GENERIC)
def test_other_promql_agrees(clients: tuple[Client, Client], query: str) -> None:
    # Instants never sit on a sample or on a lookback/range boundary (2.x is closed there).
    for t in (T0 + 1805, T0 + 2 * 3600 + 2405 + 120, T0 + 2 * 3600 + 2400 + 295):
        simulated, real = _both(clients, "get_data_promql_instant", query, t)
        assert simulated == real, f"at {t}"
    simulated, real = _both(clients, "get_data_promql", query, T0 + 5, T0 + 3 * 3600 + 5, 600)
    assert simulated == real
    assert simulated[1]


@pytest.mark.parametrize("query", [
    # Two series onto one label set.
    'label_replace(sum by (kube_cluster_name, kube_namespace_name) '
    '(sysdig_container_cpu_cores_used), "kube_namespace_name", "x", "", "")',
    'label_replace(sysdig_container_cpu_cores_used, "1x", "x", "", "")',
])
def test_refused_promql_is_refused_by_both(clients: tuple[Client, Client], query: str) -> None:
    answers = [c.get_data_promql_instant(query, T0 + 1805) for c in clients]
    assert answers[0] == answers[1] and answers[0][0] is False, answers


def test_proxy_speaks_sysdig_auth(prometheus_proxy: SysdigPrometheusProxy) -> None:
    wrong = SdMonitorClient(token="wrong", sdc_url=prometheus_proxy.url)
    assert wrong.get_data_promql_instant("vector(1)") == (False, "Unauthorized")


_CLAIM = "on (kube_cluster_name, kube_namespace_name, kube_persistentvolumeclaim_name)"
_POD = "on (kube_cluster_name, kube_namespace_name, kube_pod_name)"
_SIZE = "kube_persistentvolumeclaim_resource_requests_storage_bytes"
_INFO = "kube_persistentvolumeclaim_info"
MANY_TO_ONE = [
    # Arithmetic: the many side's labels without its name, plus the included label.
    f"{_SIZE} * {_CLAIM} group_left (kube_storageclass_name) {_INFO}",
    # A comparison without bool keeps the left value and the many side's name.
    f"{_SIZE} > {_CLAIM} group_left (kube_storageclass_name) {_INFO}",
    f"{_SIZE} < bool {_CLAIM} group_left (kube_storageclass_name) {_INFO}",
    # group_right: the value is still left op right, the labels the right (many) side's.
    f"{_INFO} - {_CLAIM} group_right {_SIZE}",
    f"({_INFO} * 3) >= {_CLAIM} group_right () ({_SIZE} / 1073741824)",
    # An included label the one side lacks is removed from the result.
    'kube_pod_container_resource_requests{resource=~"nvidia.*"} * on (kube_cluster_name) '
    "group_left (resource) count by (kube_cluster_name) (" + _INFO + ")",
    # An included label the many side has is overwritten by the one side's value.
    f'label_replace({_SIZE}, "kube_storageclass_name", "x", "", "") / {_CLAIM} '
    f"group_left (kube_storageclass_name) {_INFO}",
    # ignoring() instead of on(); the one side is an aggregate.
    'kube_pod_container_resource_requests{resource=~"nvidia.*"} / ignoring (resource, '
    "kube_pod_container_name) group_left sum without (kube_pod_container_name, resource) "
    '(kube_pod_container_resource_requests{resource="cpu"})',
    # GPU utilisation joined to the pods that hold the devices, as gpu.usage does.
    'sum by (kube_cluster_name, kube_namespace_name, kube_pod_name) (label_replace('
    'label_replace(DCGM_FI_DEV_GPU_UTIL, "kube_pod_name", "$1", "pod", "(.+)"), '
    '"kube_namespace_name", "$1", "namespace", "(.+)")) * ' + _POD + " group_right "
    'group by (kube_cluster_name, kube_namespace_name, kube_workload_name, kube_pod_name, '
    'resource) (kube_pod_container_resource_requests{resource=~"nvidia.*"})',
]


@pytest.mark.parametrize("query", MANY_TO_ONE)
def test_many_to_one_matching_agrees(clients: tuple[Client, Client], query: str) -> None:
    for t in (T0 + 1805, T0 + 2 * 3600 + 2405 + 120):
        simulated, real = _both(clients, "get_data_promql_instant", query, t)
        assert simulated == real, f"at {t}"
    simulated, real = _both(clients, "get_data_promql", query, T0 + 5, T0 + 3 * 3600 + 5, 600)
    assert simulated == real
    assert simulated[1]


@pytest.mark.parametrize(("query", "error"), [
    # Several series on the one side for one match group (Prometheus adds the group and series).
    (f"{_SIZE} * on (kube_cluster_name) group_left {_INFO}",
     "found duplicate series for the match group "),
    (f"{_INFO} * on (kube_cluster_name) group_right {_SIZE}",
     "found duplicate series for the match group "),
    # Two many-side series that become one label set once the name is dropped and the
    # included label is copied.
    (f'{{__name__=~"{_SIZE}|{_INFO}"}} * {_CLAIM} group_left (kube_storageclass_name) {_INFO}',
     "multiple matches for labels: grouping labels must ensure unique matches"),
])
def test_refused_many_to_one_is_refused_by_both(clients: tuple[Client, Client], query: str,
                                                error: str) -> None:
    for t in (T0 + 1805, T0 + 2 * 3600 + 2405 + 120):
        answers = [c.get_data_promql_instant(query, t) for c in clients]
        assert [ok for ok, _ in answers] == [False, False], answers
        assert all(str(msg).startswith(error) for _, msg in answers), answers

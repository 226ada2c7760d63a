"""The fleet's nodes: allocatable capacity that comes and goes, with exact ground truth."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from chargeback_simulator.fleet import CPU_QUANTUM, MIB, Fleet, FleetSpec
from chargeback_simulator.promql import Engine
from exporter.clock import FakeClock

T0 = 1_794_009_600  # an hour boundary
H = 3600


def _allocatable(step: int, period: int = H) -> str:
    return ("sum by (kube_cluster_name, resource) (sum_over_time((sum by (kube_cluster_name, "
            f"resource) (last_over_time(kube_node_status_allocatable[{step // 2}s])))"
            f"[{period}s:{step}s]))")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(FleetSpec(seed=1), clock=FakeClock(T0 + 5 * H + 100), history=12 * H)


def test_nodes_join_and_leave_inside_periods(fleet: Fleet) -> None:
    nodes = fleet.nodes(T0, T0 + 5 * H)
    inside = [n for n in nodes if T0 < n.start < T0 + 5 * H and n.start % H]
    assert inside, "some node must start inside a period, off the hour"
    assert [n for n in nodes if T0 < n.end < T0 + 5 * H and n.end % H]
    assert {n.cluster for n in nodes} == set(fleet.clusters())
    assert all(n.cpu > 0 and n.memory > 0 for n in nodes)


@pytest.mark.parametrize(("start", "step"), [(T0 + 3 * H, 10), (T0 + H, 60), (T0 + H, 600)])
def test_promql_sums_equal_the_ground_truth(fleet: Fleet, start: int, step: int) -> None:
    answer = Engine(fleet).instant(_allocatable(step), start + H - step / 2)
    truth = fleet.allocatable_sums(start, start + H, None if step == 10 else step)
    got = {(lbl["kube_cluster_name"], lbl["resource"]): float(v[0])
           for lbl, v in zip(answer.series.labels, answer.series.values, strict=True)}
    assert set(got) == {(c, r) for c in truth for r in ("cpu", "memory")}
    for (cluster, resource), value in got.items():
        quanta = value * CPU_QUANTUM if resource == "cpu" else value / MIB
        assert quanta == truth[cluster][resource]  # exact: float64 sums of quanta


def test_truth_by_hand_for_one_cluster(fleet: Fleet) -> None:
    start, end = T0 + 3 * H, T0 + 4 * H
    cluster = fleet.clusters()[0]
    expected = {"cpu": 0, "memory": 0}
    for n in fleet.nodes(start, end):
        if n.cluster == cluster:
            steps = len(range(max(start, n.start), min(end, n.end), 10))
            expected["cpu"] += steps * n.cpu
            expected["memory"] += steps * n.memory
    assert fleet.allocatable_sums(start, end)[cluster] == expected
    hours = fleet.allocatable_truth(start, end)[cluster]
    with localcontext() as ctx:
        ctx.prec = 50
        assert hours["cpu"] == Decimal(expected["cpu"] * 10) / Decimal(CPU_QUANTUM * H)
        assert hours["memory"] == Decimal(expected["memory"] * 10) / Decimal(1024 * H)


def test_node_size_follows_the_spec() -> None:
    small = Fleet(FleetSpec(seed=1, node_cores=2, nodes_per_cluster=1), timelines=None)
    [node, *_] = small.nodes(T0, T0 + H)
    assert (node.cpu, node.memory) == (4 * CPU_QUANTUM - 5, 4 * 1024 - 819)
    with pytest.raises(ValueError, match="nodes_per_cluster"):
        FleetSpec(nodes_per_cluster=0)


@pytest.fixture(scope="module")
def gpu_fleet() -> Fleet:
    return Fleet(FleetSpec(seed=1, allocations=True), clock=FakeClock(T0 + 5 * H + 100),
                 history=12 * H)


def test_gpu_allocatable_promql_sums_equal_the_ground_truth(gpu_fleet: Fleet) -> None:
    start = T0 + 3 * H
    answer = Engine(gpu_fleet).instant(_allocatable(10), start + H - 5)
    got = {(lbl["kube_cluster_name"], lbl["resource"]): float(v[0])
           for lbl, v in zip(answer.series.labels, answer.series.values, strict=True)}
    truth = gpu_fleet.allocatable_sums(start, start + H)
    names = {"gpu": "nvidia_com_gpu", "gpu.mig-1g.5gb": "nvidia_com_mig_1g_5gb",
             "gpu.mig-3g.20gb": "nvidia_com_mig_3g_20gb", "cpu": "cpu", "memory": "memory"}
    assert set(got) == {(c, names[r]) for c in truth for r in truth[c]}
    assert {r for c in truth for r in truth[c]} == set(names)
    for cluster, per in truth.items():
        for resource, value in per.items():
            served = got[cluster, names[resource]]
            if resource == "cpu":
                served *= CPU_QUANTUM
            elif resource == "memory":
                served /= MIB
            assert served == value  # device-steps, exact
    hours = gpu_fleet.allocatable_truth(start, start + H)
    with localcontext() as ctx:
        ctx.prec = 50
        for cluster, per in truth.items():
            assert hours[cluster]["gpu"] == Decimal(per["gpu"] * 10) / H


def test_gpu_nodes_hold_every_running_gpu_pod_with_devices_to_spare(gpu_fleet: Fleet) -> None:
    alloc = gpu_fleet.allocations
    assert alloc is not None
    start, end = T0 + 2 * H, T0 + 5 * H
    steps = range(start, end, 10)
    held: dict[tuple[str, str], list[int]] = {}
    for pod in gpu_fleet.pods(start, end):
        grant = alloc.grants.get(pod.workload)
        if grant is None:
            continue
        row = held.setdefault((pod.workload.cluster, grant.resource), [0] * len(steps))
        for i, t in enumerate(steps):
            row[i] += grant.count if pod.start <= t < pod.end else 0
    offered: dict[tuple[str, str], list[int]] = {}
    for node in gpu_fleet.nodes(start, end):
        for resource, devices in node.gpus:
            row = offered.setdefault((node.cluster, resource), [0] * len(steps))
            for i, t in enumerate(steps):
                row[i] += devices if node.start <= t < node.end else 0
    assert {r for _, r in held} == {"nvidia_com_gpu", "nvidia_com_mig_1g_5gb",
                                    "nvidia_com_mig_3g_20gb"}
    for key, row in held.items():
        # The permanent node hosts the pods; it alone offers more than they hold at any step.
        permanent = min(offered[key])
        assert all(permanent > n for n in row), key
    # Idle GPU nodes come and go inside the window.
    assert any(len(set(row)) > 1 for (_, r), row in offered.items() if r == "nvidia_com_gpu")


def test_gpus_leave_cpu_and_memory_allocatable_unchanged(fleet: Fleet, gpu_fleet: Fleet) -> None:
    start = T0 + 3 * H
    plain = fleet.allocatable_sums(start, start + H)
    with_gpus = gpu_fleet.allocatable_sums(start, start + H)
    assert {c: {r: v for r, v in per.items() if r in ("cpu", "memory")}
            for c, per in with_gpus.items()} == plain
    assert all(set(per) == {"cpu", "memory"} for per in plain.values())

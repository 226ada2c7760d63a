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

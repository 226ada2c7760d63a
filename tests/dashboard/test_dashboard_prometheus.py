"""Every dashboard query evaluated by a real Prometheus 2.x over the synthetic fleet.

With the panels' step set to the 10 s sample interval, the per-hour panels must reproduce the
fleet's ground truth (the same integrals the exporter bills) by cost center, org drill-down and
workload; at the default 1-minute step every query must succeed and the by-cost-center views
must have data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest
import requests
from conformance.conftest import T0, ConformanceData

from exporter.dashboard import OrgSources, Panel, Queries, panels
from exporter.model import UNALLOCATED
from exporter.simulator.fleet import CPU_QUANTUM, MIB
from exporter.simulator.prometheus import RealPrometheus

pytestmark = pytest.mark.integration

HOUR = T0 + 3600  # a full hour of data: [T0+1h, T0+2h)
EXACT_STEP = 10


def query(prom: RealPrometheus, expr: str, at: float) -> list[dict[str, Any]]:
    resp = requests.get(f"{prom.url}/api/v1/query", params={"query": expr, "time": at}, timeout=60)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", body.get("error")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def by_labels(result: list[dict[str, Any]], names: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for r in result:
        k = tuple(r["metric"].get(n, "") for n in names)
        assert k not in out, f"duplicate series {k}"
        out[k] = float(r["value"][1])
    return out


def panel(items: list[Panel], name: str) -> str:
    [p] = [p for p in items if p.name == name]
    return p.queries[0][0]


def assert_close(actual: Mapping[Any, float], expected: Mapping[Any, Decimal | float]) -> None:
    assert set(actual) == set(expected)
    for k, v in expected.items():
        assert math.isclose(actual[k], float(v), rel_tol=1e-9, abs_tol=1e-12), (k, actual[k], v)


@pytest.fixture(scope="module")
def default_panels() -> list[Panel]:
    return panels(Queries(OrgSources.from_config()))


@pytest.fixture(scope="module")
def exact_panels() -> list[Panel]:
    return panels(Queries(OrgSources.from_config(), step_seconds=EXACT_STEP))


def test_every_panel_query_succeeds(
    prometheus: RealPrometheus, conformance_data: ConformanceData, default_panels: list[Panel]
) -> None:
    at = conformance_data.now - 300
    for p in default_panels:
        for expr, _, label in p.queries:
            result = query(prometheus, expr, at)
            if "by-costcenter" in p.tags or "total" in p.tags or "drill-down" in p.tags:
                assert result, f"{p.name} {label}: no data"
            if "by-costcenter" in p.tags:
                assert all("costcenter" in r["metric"] for r in result), p.name
    names = {p.name for p in default_panels}
    assert len(names) == len(default_panels)


def _truth_by(data: ConformanceData, res: str, keys: Callable[[Any], tuple[str, ...]],
              start: int, end: int) -> dict[tuple[str, ...], Decimal]:
    out: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for key, sums in data.fleet.ground_truth(start, end).items():
        out[keys(key)] += sums["cpu" if res == "cpu" else "memory"].chargeable
    return dict(out)


@pytest.mark.parametrize("res", ["cpu", "memory"])
def test_per_hour_by_costcenter_equals_ground_truth(
    prometheus: RealPrometheus, conformance_data: ConformanceData, exact_panels: list[Panel],
    res: str,
) -> None:
    unit = "core-hours" if res == "cpu" else "GiB-hours"
    expr = panel(exact_panels, f"Chargeable {unit} per hour by costcenter")
    # At end - step/2 the 1 h subquery visits exactly the hour's 360 sample steps.
    got = by_labels(query(prometheus, expr, HOUR + 3600 - EXACT_STEP / 2), ("costcenter",))
    fleet = conformance_data.fleet
    truth = _truth_by(conformance_data, res, lambda k: (fleet.org_labels(k)["costcenter"],),
                      HOUR, HOUR + 3600)
    assert (UNALLOCATED,) in truth and len(truth) > 2  # the fleet has both kinds
    assert_close(got, truth)


@pytest.mark.parametrize(
    ("title", "names"),
    [
        ("businessunit", ("businessunit",)),
        ("businessunit / department", ("businessunit", "department")),
        ("department / team", ("department", "team")),
        ("team / namespace", ("team", "kube_namespace_name")),
    ],
)
def test_drill_down_equals_ground_truth(
    prometheus: RealPrometheus, conformance_data: ConformanceData, exact_panels: list[Panel],
    title: str, names: tuple[str, ...],
) -> None:
    fleet = conformance_data.fleet

    def keys(k: Any) -> tuple[str, ...]:
        org = fleet.org_labels(k)
        return tuple(k.namespace if n == "kube_namespace_name" else org[n] for n in names)

    for res, unit in (("cpu", "core-hours"), ("memory", "GiB-hours")):
        expr = panel(exact_panels, f"Chargeable {unit} per hour by {title}")
        got = by_labels(query(prometheus, expr, HOUR + 3600 - EXACT_STEP / 2), names)
        assert_close(got, _truth_by(conformance_data, res, keys, HOUR, HOUR + 3600))


def test_top_workloads_and_unallocated_share(
    prometheus: RealPrometheus, conformance_data: ConformanceData, exact_panels: list[Panel],
) -> None:
    fleet = conformance_data.fleet
    at = HOUR + 3600 - EXACT_STEP / 2
    truth = fleet.ground_truth(HOUR, HOUR + 3600)
    assert len(truth) <= 20  # topk(20) then returns every workload
    expr = panel(exact_panels, "Top 20 workloads by chargeable core-hours per hour")
    names = ("kube_cluster_name", "kube_namespace_name", "kube_workload_type",
             "kube_workload_name", "costcenter")
    got = by_labels(query(prometheus, expr, at), names)
    expected = {(k.cluster, k.namespace, k.kind, k.name, fleet.org_labels(k)["costcenter"]):
                s["cpu"].chargeable for k, s in truth.items()}
    assert_close(got, expected)

    total = sum((s["cpu"].chargeable for s in truth.values()), Decimal(0))
    unallocated = sum((s["cpu"].chargeable for k, s in truth.items()
                       if fleet.org_labels(k)["costcenter"] == UNALLOCATED), Decimal(0))
    share = panel(exact_panels, "Unallocated share of core-hours (no costcenter), last hour")
    [r] = query(prometheus, share, at)
    assert math.isclose(float(r["value"][1]), float(100 * unallocated / total), rel_tol=1e-9)


def test_instant_views_equal_one_sample_step(
    prometheus: RealPrometheus, conformance_data: ConformanceData, exact_panels: list[Panel],
) -> None:
    fleet = conformance_data.fleet
    step = HOUR + 1800  # a sample instant
    sums = fleet.sample_sums(step, step + EXACT_STEP)
    cc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for k, s in sums.items():
        c = cc[fleet.org_labels(k)["costcenter"]]
        c["charge"] += s["cpu"].chargeable
        c["used"] += s["cpu"].usage
        c["req"] += s["cpu"].request
        c["mem_used"] += s["memory"].usage
        c["mem_req"] += s["memory"].request

    def get(name: str) -> dict[tuple[str, ...], float]:
        return by_labels(query(prometheus, panel(exact_panels, name), step), ("costcenter",))

    assert_close(get("Chargeable CPU (cores) by costcenter"),
                 {(k,): v["charge"] / CPU_QUANTUM for k, v in cc.items()})
    assert_close(get("CPU consumption (cores used) by costcenter"),
                 {(k,): v["used"] / CPU_QUANTUM for k, v in cc.items()})
    assert_close(get("Memory efficiency (used / requested) by costcenter"),
                 {(k,): 100 * v["mem_used"] / v["mem_req"] for k, v in cc.items() if v["mem_req"]})
    assert_close(get("Idle but charged CPU (cores) by costcenter"),
                 {(k,): (v["charge"] - v["used"]) / CPU_QUANTUM for k, v in cc.items()})
    assert_close(get("Memory consumption (GiB used) by costcenter"),
                 {(k,): v["mem_used"] * MIB / 2**30 for k, v in cc.items()})

"""Every dashboard query evaluated by a real Prometheus 2.x over the synthetic fleet.

The fleet has 10 s samples, so Sysdig would give the panels a 10 s `$__interval` over a short
view: the charts then hold one sample per point, and adding up an hour of points (or the total
over a one-hour viewed range) must reproduce the fleet's ground truth (the same integrals the
exporter bills) by cost center, org drill-down and workload. At a 1-minute interval every query
must succeed and the by-cost-center views must have data. Rolled-up data is covered by
test_dashboard_resolution.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest
import requests

from chargeback_simulator.fleet import CPU_QUANTUM, MIB
from chargeback_simulator.prometheus import RealPrometheus
from exporter.dashboard import OrgSources, Panel, Queries, panels, sysdig_variables
from exporter.model import UNALLOCATED

from .conftest import T0, ConformanceData

HOUR = T0 + 3600  # a full hour of data: [T0+1h, T0+2h)
STEP = 10  # the fleet's sample interval, and the panels' interval in these tests


def query(prom: RealPrometheus, expr: str, at: float) -> list[dict[str, Any]]:
    resp = requests.get(f"{prom.url}/api/v1/query", params={"query": expr, "time": at}, timeout=60)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", body.get("error")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def hour_of_points(prom: RealPrometheus, expr: str, names: tuple[str, ...]
                   ) -> dict[tuple[str, ...], float]:
    """A chart's points over HOUR (10 s interval) added up, in unit-hours, by `names`."""
    resp = requests.get(f"{prom.url}/api/v1/query_range", timeout=120, params={
        "query": sysdig_variables(expr, interval=STEP, range_=3600),
        "start": HOUR + STEP, "end": HOUR + 3600, "step": STEP})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", body.get("error")
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for r in body["data"]["result"]:
        assert len(r["values"]) <= 3600 // STEP
        out[tuple(r["metric"].get(n, "") for n in names)] += sum(
            float(v) for _, v in r["values"]) * STEP / 3600
    return dict(out)


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


def test_every_panel_query_succeeds(
    prometheus: RealPrometheus, conformance_data: ConformanceData, default_panels: list[Panel]
) -> None:
    at = conformance_data.now - 300
    for p in default_panels:
        for expr, _, label in p.queries:
            result = query(prometheus, sysdig_variables(expr, interval=60, range_=3600), at)
            if "by-costcenter" in p.tags or "total" in p.tags or "drill-down" in p.tags:
                assert result, f"{p.name} {label}: no data"
            if "by-costcenter" in p.tags:
                assert all("costcenter" in r["metric"] for r in result), p.name
    names = {p.name for p in default_panels}
    assert len(names) == len(default_panels)


def _truth_by(data: ConformanceData, res: str, keys: Callable[[Any], tuple[str, ...]],
              start: int, end: int) -> dict[tuple[str, ...], Decimal]:
    out: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    name = "cpu" if res == "cpu" else "memory"
    for key, sums in data.fleet.ground_truth(start, end).items():
        if name in sums:  # a claim charged on its own has no cpu or memory
            out[keys(key)] += sums[name].chargeable
    return dict(out)


@pytest.mark.parametrize("res", ["cpu", "memory"])
def test_per_hour_by_costcenter_equals_ground_truth(
    prometheus: RealPrometheus, conformance_data: ConformanceData, default_panels: list[Panel],
    res: str,
) -> None:
    unit = "core-hours" if res == "cpu" else "GiB-hours"
    got = hour_of_points(prometheus, panel(default_panels, f"Chargeable {unit} per hour by costcenter"),
                         ("costcenter",))
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
    prometheus: RealPrometheus, conformance_data: ConformanceData, default_panels: list[Panel],
    title: str, names: tuple[str, ...],
) -> None:
    fleet = conformance_data.fleet

    def keys(k: Any) -> tuple[str, ...]:
        org = fleet.org_labels(k)
        return tuple(k.namespace if n == "kube_namespace_name" else org[n] for n in names)

    for res, unit in (("cpu", "core-hours"), ("memory", "GiB-hours")):
        got = hour_of_points(prometheus, panel(default_panels, f"Chargeable {unit} per hour by {title}"),
                             names)
        assert_close(got, _truth_by(conformance_data, res, keys, HOUR, HOUR + 3600))


def test_top_workloads_totals_and_unallocated_share(
    prometheus: RealPrometheus, conformance_data: ConformanceData, default_panels: list[Panel],
) -> None:
    fleet = conformance_data.fleet
    # The dashboard shows cpu and memory: claims charged on their own have neither.
    truth = {k: s for k, s in fleet.ground_truth(HOUR, HOUR + 3600).items() if "cpu" in s}
    assert len(truth) <= 20  # topk(20) then returns every workload
    names = ("kube_cluster_name", "kube_namespace_name", "kube_workload_type",
             "kube_workload_name", "costcenter")
    top = panel(default_panels, "Top 20 workloads by chargeable core-hours per hour")
    got = hour_of_points(prometheus, top, names)
    expected = {(k.cluster, k.namespace, k.kind, k.name, fleet.org_labels(k)["costcenter"]):
                s["cpu"].chargeable for k, s in truth.items()}
    assert_close(got, expected)

    # Number panels over a one-hour viewed range, looked at live (a few seconds past the hour).
    at = HOUR + 3600 + 3

    def number(name: str) -> float:
        expr = sysdig_variables(panel(default_panels, name), interval=STEP, range_=3600)
        [r] = query(prometheus, expr, at)
        return float(r["value"][1])

    for res, unit in (("cpu", "core-hours"), ("memory", "GiB-hours")):
        total = sum((s[res].chargeable for s in truth.values()), Decimal(0))
        unallocated = sum((s[res].chargeable for k, s in truth.items()
                           if fleet.org_labels(k)["costcenter"] == UNALLOCATED), Decimal(0))
        assert math.isclose(number(f"Chargeable {unit} in the viewed range"), float(total),
                            rel_tol=1e-9)
        share = number(f"Unallocated share of {unit} (no costcenter) in the viewed range")
        assert math.isclose(share, float(100 * unallocated / total), rel_tol=1e-9)


def test_interval_views_equal_one_sample_step(
    prometheus: RealPrometheus, conformance_data: ConformanceData, default_panels: list[Panel],
) -> None:
    fleet = conformance_data.fleet
    step = HOUR + 1800  # a sample instant: the 10 s interval ending at step + 10 holds it alone
    sums = fleet.sample_sums(step, step + STEP)
    cc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for k, s in sums.items():
        c = cc[fleet.org_labels(k)["costcenter"]]
        c["charge"] += s["cpu"].chargeable
        c["used"] += s["cpu"].usage
        c["req"] += s["cpu"].request
        c["mem_used"] += s["memory"].usage
        c["mem_req"] += s["memory"].request

    def get(name: str) -> dict[tuple[str, ...], float]:
        expr = sysdig_variables(panel(default_panels, name), interval=STEP, range_=3600)
        return by_labels(query(prometheus, expr, step + STEP), ("costcenter",))

    assert_close(get("Chargeable core-hours per hour by costcenter"),
                 {(k,): v["charge"] / CPU_QUANTUM for k, v in cc.items()})
    assert_close(get("CPU consumption (cores used) by costcenter"),
                 {(k,): v["used"] / CPU_QUANTUM for k, v in cc.items()})
    assert_close(get("Memory efficiency (used / requested) by costcenter"),
                 {(k,): 100 * v["mem_used"] / v["mem_req"] for k, v in cc.items() if v["mem_req"]})
    assert_close(get("Idle but charged CPU (cores) by costcenter"),
                 {(k,): (v["charge"] - v["used"]) / CPU_QUANTUM for k, v in cc.items()})
    assert_close(get("Memory consumption (GiB used) by costcenter"),
                 {(k,): v["mem_used"] * MIB / 2**30 for k, v in cc.items()})

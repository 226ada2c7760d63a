"""The real sdcclient against the simulator: the exporter's units equal the fleet's ground truth."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest

from chargeback_simulator.fleet import Fleet
from chargeback_simulator.series import LabelMatcher
from exporter.config import Config
from exporter.model import UNALLOCATED, ChargeLine, WorkloadKey
from exporter.org import OrgModel
from exporter.periods import Period
from exporter.pipeline import charge_lines
from exporter.queries import REQUESTS
from exporter.wiring import build_source
from tests.rigs.sim import T0, H, Sim

Q = Decimal("0.000000001")  # the records' quantity scale


def q(v: Decimal) -> Decimal:
    return v.quantize(Q, rounding=ROUND_HALF_EVEN)


def measure(sim: Sim, period: Period, cfg: Config | None = None) -> list[ChargeLine]:
    cfg = cfg or sim.config()
    source = build_source(cfg, sim.clock)
    return charge_lines(source.fetch(period), OrgModel(cfg.org))


def assert_equals_ground_truth(fleet: Fleet, period: Period, lines: list[ChargeLine],
                               grain: str = "pod", resolution: int | None = None) -> None:
    truth = fleet.ground_truth(period.start, period.end, grain, resolution)  # type: ignore[arg-type]
    got = {(ln.workload, ln.resource): ln for ln in lines}
    expected_keys = {(k, r) for k, per in truth.items() for r in per}
    assert set(got) == expected_keys
    for (key, res), ln in got.items():
        t = truth[key][res]
        assert (q(ln.usage), q(ln.request), q(ln.chargeable)) == (q(t.usage), q(t.request),
                                                                  q(t.chargeable)), (key, res)
        if key.kind != "persistentvolumeclaim":  # a claim alone takes its namespace's labels
            assert ln.org.values == fleet.org_labels(key), key


@pytest.mark.parametrize("stamping", ["sysdig", "prometheus"])
@pytest.mark.parametrize("seed", [1, 7, 42])
@pytest.mark.parametrize("hour", [0, 1, 2])
def test_units_equal_ground_truth(sim_factory: Callable[..., Sim], seed: int, hour: int,
                                  stamping: str) -> None:
    """Exact whether range answers are aligned to the step (Sysdig) or not (Prometheus): the
    source asks instant queries only, so no stamp convention can drop a series."""
    sim = sim_factory(seed=seed, stamping=stamping)
    period = Period(T0 + hour * H, T0 + (hour + 1) * H)
    lines = measure(sim, period)
    assert lines, "the fleet has workloads in every hour"
    assert_equals_ground_truth(sim.fleet, period, lines)


@pytest.mark.parametrize(("age", "step"), [
    (5 * H, 60),  # beyond Sysdig's 4 h of 10 s data: 1-minute roll-ups
    (4 * H + 1800, 60),  # across the 4 h boundary: roll-ups, then 10 s samples every minute
    (10 * 24 * H, 600),  # beyond the week of 1-minute data: 10-minute roll-ups
])
@pytest.mark.parametrize("grain", ["pod", "container"])
def test_old_periods_are_measured_exactly_on_the_rolled_up_data(
        sim_factory: Callable[..., Sim], age: int, step: int, grain: str) -> None:
    sim = sim_factory(now=T0 + age, history=age + 2 * H)
    period = Period(T0, T0 + H)
    cfg = sim.config(periods={"grain": grain})
    source = build_source(cfg, sim.clock)
    assert source.step_for(period) == step  # from the simulator's timelines
    lines = charge_lines(source.fetch(period), OrgModel(cfg.org))
    assert lines and {ln.method for ln in lines} == {f"max-request-usage/{grain}/{step}s/v1"}
    assert_equals_ground_truth(sim.fleet, period, lines, grain, resolution=step)
    # Measured at 10 s instead, the rolled-up data would be missed: the step matters.
    raw = sim.fleet.ground_truth(period.start, period.end, grain)  # type: ignore[arg-type]
    assert raw != sim.fleet.ground_truth(period.start, period.end, grain,  # type: ignore[arg-type]
                                         resolution=step)


def test_container_grain_and_ten_minute_periods(sim: Sim) -> None:
    cfg = sim.config(periods={"grain": "container", "length": "10m"})
    for start in (T0 + H, T0 + H + 600, T0 + 2 * H + 3000):
        period = Period(start, start + 600)
        assert_equals_ground_truth(sim.fleet, period, measure(sim, period, cfg), grain="container")


def test_container_grain_charges_at_least_pod_grain(sim: Sim) -> None:
    period = Period(T0 + H, T0 + 2 * H)
    pod = {(ln.workload, ln.resource): ln.chargeable for ln in measure(sim, period)}
    cont = {(ln.workload, ln.resource): ln.chargeable
            for ln in measure(sim, period, sim.config(periods={"grain": "container"}))}
    assert all(cont[k] >= pod[k] for k in pod)
    assert any(cont[k] > pod[k] for k in pod), "the fleet has pods where grain matters"


def test_container_grain_bills_each_container_once(sim: Sim) -> None:
    """Usage and requests name their containers in different labels: joined right, a container's
    usage and request are compared with each other, never both billed."""
    period = Period(T0 + H, T0 + 2 * H)
    pod = {(ln.workload, ln.resource): ln for ln in measure(sim, period)}
    cont = {(ln.workload, ln.resource): ln
            for ln in measure(sim, period, sim.config(periods={"grain": "container"}))}
    assert cont.keys() == pod.keys()
    single = {w.key for w in sim.fleet.workloads() if len(w.containers) == 1}
    assert single & {k for k, _ in cont} and {k for k, _ in cont} - single
    for (key, res), c in cont.items():
        p = pod[(key, res)]
        # The same samples at both grains; only where the max is taken differs.
        assert (c.usage, c.request) == (p.usage, p.request), key
        assert p.chargeable <= c.chargeable <= c.usage + c.request, key
        if key in single:  # one container: the pod's max is the container's
            assert c.chargeable == p.chargeable, key
        if res == "memory" and c.request:  # memory usage is never 0: max < sum
            assert c.chargeable < c.usage + c.request, key


def test_unlabeled_workload_is_unallocated(sim: Sim) -> None:
    period = Period(T0 + H, T0 + 2 * H)
    lines = measure(sim, period)
    key: WorkloadKey = sim.fleet.special["unallocated"]
    mine = [ln for ln in lines if ln.workload == key]
    assert mine and all(set(ln.org.values.values()) == {UNALLOCATED} for ln in mine)
    ns_only = [ln for ln in lines if ln.workload == sim.fleet.special["namespace_only"]]
    assert ns_only and all(ln.org.sources["costcenter"] == "namespace" for ln in ns_only)


def test_seven_minute_pod_is_charged_for_seven_minutes(sim: Sim) -> None:
    period = Period(T0 + H, T0 + 2 * H)
    key = sim.fleet.special["seven_minute_job"]
    pods = [p for p in sim.fleet.pods(period.start, period.end) if p.workload == key]
    assert len(pods) == 1 and pods[0].samples(period.start, period.end) == 42
    sums = sim.fleet.sample_sums(period.start, period.end)[key]
    lines = {ln.resource: ln for ln in measure(sim, period) if ln.workload == key}
    # 42 steps of 10 s: the pod's per-step max, and not one step of the 5-minute lookback
    cpu = lines["cpu"]
    assert q(cpu.chargeable) == q(Decimal(sums["cpu"].chargeable) / 64 * 10 / 3600)
    steps = Decimal(42 * 10) / 3600
    assert cpu.request <= cpu.chargeable
    # the request is constant over the job's life, so request-hours = request x 7 minutes
    req_cores = Decimal(sums["cpu"].request) / 64 / 42
    assert q(cpu.request) == q(req_cores * steps)


def test_requests_of_pods_that_do_not_run_are_not_billed(sim: Sim) -> None:
    """kube-state-metrics keeps the request series of Pending, Completed, Evicted and Failed
    pods; a request is billed only at steps where its pod has a usage sample."""
    period = Period(T0 + H, T0 + 2 * H)
    lines = {ln.workload: ln for ln in measure(sim, period) if ln.resource == "cpu"}
    data = sim.fleet.select([LabelMatcher.of("__name__", "=", REQUESTS),
                             LabelMatcher.of("resource", "=", "cpu")],
                            period.start * 1000, (period.end - 1) * 1000)
    served: dict[WorkloadKey, Decimal] = defaultdict(Decimal)
    for labels, row in zip(data.labels, data.values, strict=True):
        key = WorkloadKey(labels["kube_cluster_name"], labels["kube_namespace_name"],
                          labels["kube_workload_type"], labels["kube_workload_name"])
        served[key] += Decimal(int(np.nansum(row) * 64)) / 64 * 10 / 3600
    truth = sim.fleet.ground_truth(period.start, period.end)
    kept = {key for key, ln in lines.items() if q(ln.request) < q(served[key])}
    assert {k.kind for k in kept} >= {"job", "deployment"}  # Completed, Evicted, Pending
    for key, ln in lines.items():
        assert q(ln.request) == q(truth[key]["cpu"].request) <= q(served[key]), key
        if key.kind == "statefulset":  # its pods never wait or linger in the simulator
            assert q(ln.request) == q(served[key]), key
    # In [HH:20, HH:30) the seven-minute job (run HH:10-HH:17) is Completed, its request series
    # kept until HH:27: it is not billed at all.
    job = sim.fleet.special["seven_minute_job"]
    later = Period(T0 + H + 1200, T0 + H + 1800)
    assert any(lb["kube_workload_name"] == job.name for lb in sim.fleet.select(
        [LabelMatcher.of("__name__", "=", REQUESTS)], later.start * 1000,
        (later.end - 1) * 1000).labels)
    assert job not in {ln.workload for ln in measure(
        sim, later, sim.config(periods={"length": "10m"}))}


def test_environment_cannot_override_url_or_token(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SDC_TOKEN", "wrong-token")
    monkeypatch.setenv("SDC_SSL_VERIFY", "false")
    period = Period(T0 + H, T0 + 2 * H)
    assert_equals_ground_truth(sim.fleet, period, measure(sim, period))
    auth = {r.headers.get("Authorization") for r in sim.server.requests}
    assert auth == {"Bearer sim-token-4f1c9a"}


def test_bytes_fetched_grow_with_workloads_not_samples(sim_factory: Callable[..., Sim]) -> None:
    small = sim_factory(seed=3, workloads_per_namespace=2)
    big = sim_factory(seed=3, workloads_per_namespace=8)
    period = Period(T0 + H, T0 + 2 * H)
    cfg_s, cfg_b = small.config(), big.config()
    us = build_source(cfg_s, small.clock).fetch(period)
    ub = build_source(cfg_b, big.clock).fetch(period)
    # The pre-count of series per cluster, then the plan's queries for the one cluster group.
    assert us.queries == ub.queries == 1 + len(build_source(cfg_s, small.clock).plan_for(period)[0].all())
    per_workload_s = us.bytes_fetched / len(us.workloads)
    per_workload_b = ub.bytes_fetched / len(ub.workloads)
    assert 0.5 < per_workload_b / per_workload_s < 2

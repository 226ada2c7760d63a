"""The synthetic fleet: structure, special cases, exactness, ground truth, OpenMetrics export."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest

from chargeback_simulator.fleet import (
    CPU_QUANTUM,
    CPU_USED,
    MEM_USED,
    MIB,
    REQUESTS,
    SAMPLE_INTERVAL,
    Fleet,
    FleetSpec,
)
from chargeback_simulator.nodes import ALLOCATABLE
from chargeback_simulator.series import LabelMatcher, SeriesSet
from exporter.clock import FakeClock
from exporter.model import ORG_KEYS, UNALLOCATED, WorkloadKey
from tests.rigs.small_fleet import NOW, SMALL, T0

# Literal, not the exporter's constants: the simulator stands for Sysdig, whatever the exporter reads.
USAGE_CONTAINER_LABEL = "container_label_io_kubernetes_container_name"
REQUEST_CONTAINER_LABEL = "kube_pod_container_name"
MEDIUM = FleetSpec(seed=3, clusters=3, namespaces_per_cluster=4, workloads_per_namespace=6,
                   max_replicas=4, max_containers=3)


def _select(fleet: Fleet, metric: str, start: int, end: int, **labels: str) -> SeriesSet:
    matchers = [LabelMatcher.of("__name__", "=", metric)]
    matchers += [LabelMatcher.of(k, "=", v) for k, v in labels.items()]
    return fleet.select(matchers, start * 1000, (end - 1) * 1000)


def _key(labels: dict[str, str]) -> WorkloadKey:
    return WorkloadKey(labels["kube_cluster_name"], labels["kube_namespace_name"],
                       labels["kube_workload_type"], labels["kube_workload_name"])


def test_same_spec_same_fleet_and_seed_changes_it() -> None:
    a, b, c = Fleet(SMALL), Fleet(SMALL), Fleet(FleetSpec(seed=SMALL.seed + 1))
    assert [w.key for w in a.workloads()] == [w.key for w in b.workloads()]
    assert a.pods(T0, T0 + 3600) == b.pods(T0, T0 + 3600)
    assert a.sample_sums(T0, T0 + 3600) == b.sample_sums(T0, T0 + 3600)
    assert a.sample_sums(T0, T0 + 3600) != c.sample_sums(T0, T0 + 3600)


def test_size_follows_the_spec() -> None:
    fleet = Fleet(MEDIUM)
    regular = fleet.workloads()[:-3]
    assert len(regular) == 3 * 4 * 6
    assert len({w.key.cluster for w in regular}) == 3
    assert len({(w.key.cluster, w.key.namespace) for w in regular}) == 3 * 4
    assert max(w.replicas for w in regular) <= 4
    assert max(len(w.containers) for w in regular) <= 3


@pytest.mark.parametrize("field,value", [("clusters", 0), ("max_containers", 0),
                                          ("min_pod_lifetime", 15)])
def test_invalid_spec_is_one_clear_error(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        FleetSpec(**{field: value})


def test_variety_of_kinds_labels_and_requests() -> None:
    fleet = Fleet(MEDIUM)
    workloads = fleet.workloads()
    assert {w.key.kind for w in workloads} == {"deployment", "statefulset", "daemonset", "job"}
    org = [{k: w.labels.get(k) for k in ORG_KEYS} for w in workloads]
    assert any(all(v and v.strip() for v in o.values()) for o in org)  # fully labelled
    assert any(any(v is None for v in o.values()) and any(o.values()) for o in org)  # partial
    assert any(v == " " for o in org for v in o.values())  # whitespace-only stays on the wire
    assert any(v == "" for o in org for v in o.values())  # empty: dropped on the wire
    assert any(w.namespace_labels for w in workloads)
    assert any(not all(w.has_request) for w in workloads)
    wire = [w.wire_labels for w in workloads]
    assert any(" " in lb.values() for lb in wire)
    assert all("" not in lb.values() for lb in wire)
    assert any("kube_deployment_label_app" in lb for lb in wire)
    assert any(k.startswith("kube_statefulset_label_") for lb in wire for k in lb)
    assert any(k.startswith("kube_namespace_label_") for lb in wire for k in lb)


def test_special_cases_resolve_as_documented() -> None:
    fleet = Fleet(FleetSpec(seed=12345))
    special = fleet.special
    unallocated = fleet.org_labels(special["unallocated"])
    assert unallocated == dict.fromkeys(ORG_KEYS, UNALLOCATED)
    inherited = fleet.workload(special["namespace_only"])
    assert not any(k in inherited.labels for k in ORG_KEYS)
    assert fleet.org_labels(special["namespace_only"]) == {
        k: inherited.namespace_labels[k] for k in ORG_KEYS}
    assert special["seven_minute_job"].kind == "job"


def test_org_labels_treat_blank_values_as_missing() -> None:
    fleet = Fleet(MEDIUM)
    for w in fleet.workloads():
        resolved = fleet.org_labels(w.key)
        for k in ORG_KEYS:
            own = w.labels.get(k, "").strip()
            ns = w.namespace_labels.get(k, "").strip()
            assert resolved[k] == (own or ns or UNALLOCATED)
            assert resolved[k].strip() == resolved[k] != ""


@pytest.mark.parametrize("seed", [1, 99])
def test_seven_minute_job_has_42_samples_in_every_hour(seed: int) -> None:
    fleet = Fleet(FleetSpec(seed=seed))
    job = fleet.special["seven_minute_job"]
    for hour in range(5):
        start = T0 + hour * 3600
        pods = [p for p in fleet.pods(start, start + 3600) if p.workload == job]
        assert len(pods) == 1
        assert (pods[0].start - start, pods[0].end - start) == (600, 1020)
        assert pods[0].samples(start, start + 3600) == 42
        data = _select(fleet, CPU_USED, start, start + 3600, kube_workload_name=job.name)
        assert len(data) == 1
        present = data.ts[~np.isnan(data.values[0])] // 1000
        assert present.tolist() == list(range(start + 600, start + 1020, SAMPLE_INTERVAL))


def test_samples_sit_on_the_10s_grid_and_obey_now_and_history() -> None:
    clock = FakeClock(T0 + 1805.5)
    fleet = Fleet(SMALL, clock=clock, history=1800)
    data = _select(fleet, CPU_USED, T0 - 3600, T0 + 7200)
    stamps = data.ts // 1000
    assert (stamps % SAMPLE_INTERVAL == 0).all()
    assert stamps.min() == T0 + 10  # now - history = T0 + 5.5, first step after it
    assert stamps.max() == T0 + 1800  # the last step not after now
    clock.advance(30)
    later = _select(fleet, CPU_USED, T0 - 3600, T0 + 7200)
    assert (later.ts // 1000).max() == T0 + 1830


def test_exactness_rule_cpu_64ths_memory_mib() -> None:
    fleet = Fleet(MEDIUM)
    for metric, labels, quantum in ((CPU_USED, {}, 1 / CPU_QUANTUM), (MEM_USED, {}, MIB),
                                    (REQUESTS, {"resource": "cpu"}, 1 / CPU_QUANTUM),
                                    (REQUESTS, {"resource": "memory"}, MIB)):
        values = _select(fleet, metric, T0, T0 + 3600, **labels).values
        values = values[~np.isnan(values)]
        assert len(values) > 1000
        units = values / quantum
        assert (units == np.round(units)).all(), metric
        assert (values >= 0).all()


def test_usage_crosses_requests_and_requests_change_mid_pod() -> None:
    fleet = Fleet(MEDIUM)
    used = _select(fleet, CPU_USED, T0, T0 + 4 * 3600)
    req = _select(fleet, REQUESTS, T0, T0 + 4 * 3600, resource="cpu")
    by_container = {(lb["kube_pod_name"], lb["kube_pod_container_name"]): row
                    for lb, row in zip(req.labels, req.values, strict=True)}
    above = below = changed = 0
    for lb, row in zip(used.labels, used.values, strict=True):
        r = by_container.get((lb["kube_pod_name"], lb[USAGE_CONTAINER_LABEL]))
        if r is None:
            continue
        both = ~np.isnan(row) & ~np.isnan(r)
        above += int((row[both] > r[both]).sum())
        below += int((row[both] < r[both]).sum())
        steps = r[both]
        changed += int(len(np.unique(steps)) > 1)
    assert above > 0 and below > 0 and changed > 0
    # containers without a request still report usage
    assert len(used) > len(req)


def test_containers_are_named_as_sysdig_names_them() -> None:
    """Sysdig's usage series name their container in the cAdvisor-style label, kube-state-metrics'
    request series in `kube_pod_container_name`; a matcher on one never selects the other."""
    fleet = Fleet(MEDIUM)
    for metric, extra, own, other in (
            (CPU_USED, {}, USAGE_CONTAINER_LABEL, REQUEST_CONTAINER_LABEL),
            (MEM_USED, {}, USAGE_CONTAINER_LABEL, REQUEST_CONTAINER_LABEL),
            (REQUESTS, {"resource": "cpu"}, REQUEST_CONTAINER_LABEL, USAGE_CONTAINER_LABEL)):
        data = _select(fleet, metric, T0, T0 + 3600, **extra)
        assert len(data) and all(own in lb and other not in lb for lb in data.labels), metric
        names = {lb[own] for lb in data.labels}
        assert "app" in names and len(names) > 1
        assert len(_select(fleet, metric, T0, T0 + 3600, **extra, **{own: "app"})) == sum(
            lb[own] == "app" for lb in data.labels)
        assert len(_select(fleet, metric, T0, T0 + 3600, **extra, **{other: "app"})) == 0


def test_pods_start_and_stop_inside_a_period() -> None:
    fleet = Fleet(MEDIUM)
    pods = fleet.pods(T0, T0 + 3600)
    assert any(T0 < p.start < T0 + 3600 for p in pods)
    assert any(T0 < p.end < T0 + 3600 for p in pods)
    names = defaultdict(list)
    for p in pods:
        names[p.workload].append(p.name)
    rolled = [k for k, v in names.items() if k.kind == "deployment" and len(set(v)) > 1]
    assert rolled, "some deployment rolled over to new pod names within the hour"


def test_listed_pods_run_in_the_window() -> None:
    fleet = Fleet(MEDIUM)
    for start in (T0, T0 + 5 * 3600 + 610):
        pods = fleet.pods(start, start + 3600)
        assert pods and all(p.samples(start, start + 3600) > 0 for p in pods)


def _series(data: SeriesSet, label: str) -> dict[tuple[str, str], np.ndarray]:
    return {(lb["kube_pod_name"], lb[label]): data.ts[~np.isnan(row)] // 1000
            for lb, row in zip(data.labels, data.values, strict=True)}


def test_request_series_exist_while_pods_are_pending_and_after_they_finish() -> None:
    """kube-state-metrics keeps a pod's request series from its creation until the object is
    deleted (kube-state-metrics #440): Pending before it runs, Completed (a Job's pods, until
    their TTL), Evicted or Failed after; usage exists only while it runs."""
    fleet = Fleet(MEDIUM)
    start, end = T0, T0 + 6 * 3600
    used = _series(_select(fleet, CPU_USED, start, end), USAGE_CONTAINER_LABEL)
    req = _series(_select(fleet, REQUESTS, start, end, resource="cpu"), REQUEST_CONTAINER_LABEL)
    pods = {p.name: p for p in fleet.pods(start, end)}
    before = after = 0
    kinds_after: set[str] = set()
    for (pod, container), stamps in req.items():
        p = pods.get(pod)
        if p is None or not start + 3600 < p.start < p.end < end - 3600:
            continue  # whole lives only
        assert stamps.tolist() == list(range(p.requests_start, p.requests_end, SAMPLE_INTERVAL))
        assert used[(pod, container)].tolist() == list(range(p.start, p.end, SAMPLE_INTERVAL))
        assert p.requests_start <= p.start < p.end <= p.requests_end
        before += p.requests_start < p.start
        if p.requests_end > p.end:
            after += 1
            kinds_after.add(p.workload.kind)
            assert p.requests_end - p.end <= 900  # deleted within 15 minutes
    assert before and after and kinds_after == {"job", "deployment"}


def test_a_completed_job_pod_keeps_its_requests_until_its_ttl() -> None:
    fleet = Fleet(FleetSpec(seed=5))
    job = fleet.special["seven_minute_job"]
    hour = T0 + 3 * 3600
    [pod] = [p for p in fleet.pods(hour, hour + 3600) if p.workload == job]
    assert (pod.requests_start - hour, pod.start - hour, pod.end - hour,
            pod.requests_end - hour) == (600, 600, 1020, 1620)
    data = _select(fleet, REQUESTS, hour, hour + 3600, resource="memory",
                   kube_workload_name=job.name)
    assert (data.ts[~np.isnan(data.values[0])] // 1000).tolist() == list(
        range(hour + 600, hour + 1620, SAMPLE_INTERVAL))
    # Its request-hours are those of the 42 steps it ran, not of the 102 its series spans.
    stamps = data.ts // 1000
    ran = (stamps >= pod.start) & (stamps < pod.end)
    steps = fleet.sample_sums(hour, hour + 3600)[job]["memory"].request
    assert steps == int(np.nansum(data.values[0][ran]) / MIB) > 0
    assert steps * 102 == int(np.nansum(data.values[0]) / MIB) * 42  # one request value


def test_statefulset_restart_keeps_one_series_per_pod_name() -> None:
    fleet = Fleet(MEDIUM)
    data = _select(fleet, CPU_USED, T0, T0 + 24 * 3600)
    identities = [tuple(sorted(lb.items())) for lb in data.labels]
    assert len(identities) == len(set(identities))


def _brute_force(fleet: Fleet, start: int, end: int, grain: str, step: int = SAMPLE_INTERVAL
                 ) -> dict[WorkloadKey, list[int]]:
    """Ground truth recomputed from the served series, per `step`, with plain Python dictionaries:
    at each multiple `t` of `step`, each series' latest point in `(t - step/2, t]`; a request
    only where its pod has a usage point then."""
    raw = {}
    half = step // 2
    at = range(-(-start // step) * step, end, step)
    for name, metric, labels, quantum in (("cu", CPU_USED, {}, CPU_QUANTUM),
                                          ("mu", MEM_USED, {}, 1 / MIB),
                                          ("cr", REQUESTS, {"resource": "cpu"}, CPU_QUANTUM),
                                          ("mr", REQUESTS, {"resource": "memory"}, 1 / MIB)):
        data = _select(fleet, metric, start - half + 1, end, **labels)
        stamps = data.ts // 1000
        windows = [(stamps > t - half) & (stamps <= t) for t in at] if step > SAMPLE_INTERVAL else []
        raw[name] = {}
        for lb, row in zip(data.labels, data.values, strict=True):
            if step == SAMPLE_INTERVAL:  # each window holds one 10 s sample
                values = row
            else:
                values = np.array([row[w][~np.isnan(row[w])][-1:].sum() if (
                    ~np.isnan(row[w])).any() else np.nan for w in windows])
            if not np.isnan(values).all():
                container = lb[REQUEST_CONTAINER_LABEL if metric == REQUESTS
                               else USAGE_CONTAINER_LABEL]
                raw[name][(_key(lb), lb["kube_pod_name"], container)] = (
                    np.array(values) * quantum)
    totals: dict[WorkloadKey, list[int]] = defaultdict(lambda: [0] * 6)
    for r, (u, q) in enumerate((("cu", "cr"), ("mu", "mr"))):
        running: dict[tuple[WorkloadKey, str], np.ndarray] = {}
        for ident, row in raw[u].items():
            seen = ~np.isnan(row)
            running[ident[:2]] = running.get(ident[:2], np.zeros(len(row), dtype=bool)) | seen
        pods: dict[tuple[WorkloadKey, str], list[np.ndarray]] = defaultdict(lambda: [0, 0])
        for ident, row in raw[u].items():
            row = np.nan_to_num(row)
            req = np.where(running[ident[:2]], np.nan_to_num(raw[q].get(ident, 0.0)), 0.0)
            totals[ident[0]][3 * r] += int(row.sum())
            totals[ident[0]][3 * r + 1] += int(req.sum())
            if grain == "container":
                totals[ident[0]][3 * r + 2] += int(np.maximum(row, req).sum())
            else:
                pods[ident[:2]][0] = pods[ident[:2]][0] + row
                pods[ident[:2]][1] = pods[ident[:2]][1] + req
        for (key, _), (pu, pr) in pods.items():
            totals[key][3 * r + 2] += int(np.maximum(pu, pr).sum())
    return dict(totals)


@pytest.mark.parametrize("grain", ["pod", "container"])
@pytest.mark.parametrize("start", [T0, T0 + 3600, NOW - 1234])
def test_ground_truth_equals_brute_force_over_raw_series(grain: str, start: int) -> None:
    fleet = Fleet(MEDIUM, clock=FakeClock(NOW), timelines=None)
    truth = fleet.sample_sums(start, start + 3600, grain)  # type: ignore[arg-type]
    brute = _brute_force(fleet, start, start + 3600, grain)
    assert set(truth) == set(brute)
    for key, sums in truth.items():
        got = [sums["cpu"].usage, sums["cpu"].request, sums["cpu"].chargeable,
               sums["memory"].usage, sums["memory"].request, sums["memory"].chargeable]
        assert got == brute[key], key


def test_ground_truth_in_unit_hours() -> None:
    fleet = Fleet(SMALL)
    job = fleet.special["seven_minute_job"]
    units = fleet.sample_sums(T0, T0 + 3600)[job]
    hours = fleet.ground_truth(T0, T0 + 3600)[job]
    # 1/64 core for 10 s = 1/23040 core-hour; 1 MiB for 10 s = 1/368640 GiB-hour
    assert hours["cpu"].usage * 23040 == pytest.approx(Decimal(units["cpu"].usage), abs=Decimal("1e-40"))
    assert hours["memory"].request == Decimal(units["memory"].request) / 368640
    # The job has one container with a request: the 42 samples of its run count, not those of
    # its Completed pod, which kube-state-metrics keeps until its TTL.
    data = _select(fleet, REQUESTS, T0, T0 + 3600, resource="memory", kube_workload_name=job.name)
    stamps = data.ts // 1000
    request = data.values[0][(stamps >= T0 + 600) & (stamps < T0 + 1020)]
    assert Decimal(int(np.nansum(request))) / (2**30) * 10 / 3600 == hours["memory"].request
    assert np.nansum(data.values[0]) > np.nansum(request)
    assert hours["cpu"].chargeable >= max(hours["cpu"].usage, hours["cpu"].request)


def test_ground_truth_lists_only_workloads_with_samples() -> None:
    fleet = Fleet(SMALL, clock=FakeClock(T0 + 3600), history=3600)
    assert fleet.sample_sums(T0 + 7200, T0 + 10800) == {}
    before = fleet.sample_sums(T0 - 7200, T0 - 3600)
    assert before == {}
    present = fleet.sample_sums(T0, T0 + 3600)
    assert fleet.special["unallocated"] in present
    assert fleet.special["seven_minute_job"] in present


def test_openmetrics_export_is_grouped_timestamped_and_complete(tmp_path: Path) -> None:
    fleet = Fleet(SMALL, clock=FakeClock(T0 + 1800), history=1800)
    path = tmp_path / "fleet.om"
    count = fleet.export_openmetrics(T0 - 600, T0 + 3600, path)
    lines = path.read_text().splitlines()
    assert lines[-1] == "# EOF"
    types = [ln for ln in lines if ln.startswith("# TYPE")]
    assert types == [f"# TYPE {CPU_USED} gauge", f"# TYPE {MEM_USED} gauge",
                     f"# TYPE {REQUESTS} gauge", f"# TYPE {ALLOCATABLE} gauge"]
    samples = [ln for ln in lines if not ln.startswith("#")]
    assert len(samples) == count
    families = [ln.split("{", 1)[0] for ln in samples]
    # each family's samples are contiguous, in the TYPE order
    assert families == sorted(families, key=[CPU_USED, MEM_USED, REQUESTS, ALLOCATABLE].index)
    series: dict[str, list[int]] = defaultdict(list)
    for ln in samples:
        head, value, stamp = ln.rsplit(" ", 2)
        assert int(stamp) % SAMPLE_INTERVAL == 0 and T0 <= int(stamp) <= T0 + 1800
        float(value)
        series[head].append(int(stamp))
    assert all(s == sorted(s) for s in series.values())
    expected = sum(int((~np.isnan(_select(fleet, m, T0 - 600, T0 + 3600, **lb).values)).sum())
                   for m, lb in ((CPU_USED, {}), (MEM_USED, {}), (REQUESTS, {}), (ALLOCATABLE, {})))
    assert count == expected
    assert 'kube_namespace_name="sim-batch"' in path.read_text()


# --- retention: the data honours the timelines -----------------------------------------------

RAW = (T0 // 86400) * 86400  # a day boundary before T0, so every roll-up bucket is whole


def _rows(data: SeriesSet) -> dict[tuple[tuple[str, str], ...], np.ndarray]:
    return {tuple(sorted(labels.items())): data.values[i] for i, labels in enumerate(data.labels)}


def test_the_default_timelines_are_sysdigs_july_2020_table() -> None:
    assert Fleet(SMALL).timelines == ((10, 4 * 3600), (60, 7 * 86400), (600, 14 * 86400),
                                      (3600, 60 * 86400), (86400, 450 * 86400))


def test_a_10s_query_beyond_4h_finds_only_one_minute_points_the_rounded_mean_of_the_minute() -> None:
    now = RAW + 8 * 3600
    fleet = Fleet(SMALL, clock=FakeClock(now))
    raw = Fleet(SMALL, timelines=None)  # every 10 s sample, no roll-up
    start = now - 6 * 3600  # 6 h old: beyond the 10 s window, inside the 1-minute one
    for metric, quantum in ((CPU_USED, 1 / CPU_QUANTUM), (MEM_USED, MIB), (REQUESTS, 1 / CPU_QUANTUM)):
        extra = {"resource": "cpu"} if metric == REQUESTS else {}
        data = _select(fleet, metric, start, start + 3600, **extra)
        assert len(data) > 0
        stamps = data.ts // 1000
        assert (stamps % 60 == 0).all() and stamps.min() == start and stamps.max() == start + 3540
        samples = _rows(_select(raw, metric, start, start + 3600 + 60, **extra))
        checked = 0
        for key, row in _rows(data).items():
            tens = samples[key]
            for j in np.flatnonzero(~np.isnan(row)):
                minute = tens[6 * j: 6 * j + 6]
                quanta = minute[~np.isnan(minute)] / quantum
                mean = Decimal(int(quanta.sum())) / len(quanta)
                expected = int(mean.to_integral_value(rounding="ROUND_HALF_UP"))
                assert row[j] / quantum == expected
                checked += 1
            assert np.isnan(row).sum() == np.isnan(tens[:360].reshape(60, 6)).all(axis=1).sum()
        assert checked > 100


def test_each_instant_is_served_at_the_finest_resolution_still_kept_for_it() -> None:
    now = RAW + 20 * 86400 + 5 * 3600
    fleet = Fleet(SMALL, clock=FakeClock(now))
    cases = [(now - 3 * 3600, 10), (now - 5 * 3600, 60), (now - 6 * 86400, 60),
             (now - 8 * 86400, 600), (now - 15 * 86400, 3600)]
    for start, step in cases:
        start -= start % 3600
        stamps = _select(fleet, CPU_USED, start, start + 3600).ts // 1000
        assert len(stamps) == 3600 // step and (stamps % step == 0).all(), (start, step)
    # A range across the 4 h boundary: 1-minute points before it, 10 s samples from it on.
    edge = int(now) - 4 * 3600
    stamps = _select(fleet, CPU_USED, edge - 600, edge + 600).ts // 1000
    assert (stamps[stamps < edge] % 60 == 0).all() and len(stamps[stamps < edge]) == 10
    assert stamps[stamps >= edge].tolist() == list(range(edge, edge + 600, 10))


def test_nothing_is_kept_beyond_the_last_window() -> None:
    now = RAW + 40 * 86400
    fleet = Fleet(SMALL, clock=FakeClock(now), timelines=((10, 3600), (60, 86400)))
    assert len(_select(fleet, CPU_USED, now - 86400 - 7200, now - 86400 - 3600)) == 0
    assert len(_select(fleet, CPU_USED, now - 7200, now - 3600)) > 0
    assert fleet.sample_sums(now - 86400 - 7200, now - 86400 - 3600) == {}


@pytest.mark.parametrize("timelines", [((60, 3600),), ((10, 3600), (15, 7200)),
                                       ((10, 7200), (60, 3600)), ((60, 3600), (10, 7200)),
                                       ((10, 0),)])
def test_timelines_must_be_coarser_and_longer_tier_by_tier(timelines: tuple[tuple[int, int], ...]
                                                          ) -> None:
    with pytest.raises(ValueError, match="timelines"):
        Fleet(SMALL, timelines=timelines)


@pytest.mark.parametrize("grain", ["pod", "container"])
@pytest.mark.parametrize(("age", "resolution"), [(5 * 3600, 60), (10 * 86400, 600), (3600, 60)])
def test_coarse_ground_truth_equals_a_brute_force_over_the_served_points(
        grain: str, age: int, resolution: int) -> None:
    now = RAW + 20 * 86400
    fleet = Fleet(MEDIUM, clock=FakeClock(now))
    start = now - age
    truth = fleet.sample_sums(start, start + 3600, grain, resolution)  # type: ignore[arg-type]
    brute = _brute_force(fleet, start, start + 3600, grain, step=resolution)
    assert set(truth) == set(brute) and truth
    for key, sums in truth.items():
        got = [sums["cpu"].usage, sums["cpu"].request, sums["cpu"].chargeable,
               sums["memory"].usage, sums["memory"].request, sums["memory"].chargeable]
        assert got == brute[key], key


def test_coarse_ground_truth_in_unit_hours_weighs_each_point_by_the_resolution() -> None:
    now = RAW + 20 * 86400
    fleet = Fleet(SMALL, clock=FakeClock(now))
    start = now - 5 * 3600
    units = fleet.sample_sums(start, start + 3600, resolution=60)
    hours = fleet.ground_truth(start, start + 3600, resolution=60)
    assert units and units.keys() == hours.keys()
    with localcontext() as ctx:
        ctx.prec = 50  # the ground truth's precision
        for key, per in units.items():
            # 1/64 core for 60 s = 1/3840 core-hour; 1 MiB for 60 s = 1/61440 GiB-hour
            assert hours[key]["cpu"].chargeable == Decimal(per["cpu"].chargeable) / 3840
            assert hours[key]["memory"].usage == Decimal(per["memory"].usage) / 61440

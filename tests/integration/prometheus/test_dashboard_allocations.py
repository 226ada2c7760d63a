"""The dashboard's GPU, storage and idle panels evaluated by a real Prometheus 2.x over a fleet
with GPUs, MIG slices, claims and nodes (`FleetSpec(allocations=True)`).

As in test_dashboard_prometheus.py, the panels run at a 10 s interval over one hour and their
points, added up, must be the fleet's exact ground truth: GPU-hours by cost center and
kube-state-metrics resource, requested GiB-hours by namespace and storage class, and per cluster
the nodes' allocatable less the chargeable quantities (the idle capacity the records bill).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from chargeback_simulator.allocations import (
    CAPACITY,
    CLAIM_INFO,
    GPU_RESOURCES,
    GPU_UTIL,
    MOUNTS,
    REQUESTS,
)
from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.prometheus import RealPrometheus
from chargeback_simulator.series import METRIC_NAME, LabelMatcher, format_value
from exporter.clock import FakeClock
from exporter.config import IdleConfig, ResourcesConfig
from exporter.dashboard import OrgSources, Panel, Queries, panels, sysdig_variables
from exporter.model import family
from tests.rigs.prometheus import serving

from .test_dashboard_prometheus import assert_close, hour_of_points, panel, query

T0 = 1704067200  # 2024-01-01T00:00:00Z
NOW = T0 + 2 * 3600 + 600
HOUR = T0 + 3600
SPEC = FleetSpec(seed=11, clusters=2, namespaces_per_cluster=2, workloads_per_namespace=4,
                 max_replicas=2, max_containers=2, allocations=True)
KSM = {charged: name for name, charged in GPU_RESOURCES.items()}  # gpu -> nvidia_com_gpu


def write_allocations(fleet: Fleet, start: int, end: int, path: Path) -> None:
    """The fleet's GPU and claim series in `[start, end)` as OpenMetrics; a statefulset pod's
    instances share a name, and so one series (they never overlap), as in a TSDB."""
    assert fleet.allocations is not None
    times = np.arange(start, end, 10, dtype=np.int64)
    with path.open("w", encoding="utf-8") as out:
        for family_name in (REQUESTS, GPU_UTIL, CAPACITY, CLAIM_INFO, MOUNTS):
            data = fleet.allocations.select([LabelMatcher.of(METRIC_NAME, "=", family_name)],
                                            times)
            merged: dict[frozenset[tuple[str, str]], np.ndarray] = {}
            for labels, row in zip(data.labels, data.values, strict=True):
                key = frozenset((k, v) for k, v in labels.items() if k != METRIC_NAME)
                before = merged.get(key)
                merged[key] = row if before is None else np.where(np.isnan(row), before, row)
            out.write(f"# TYPE {family_name} gauge\n")
            for key, row in merged.items():
                body = ",".join(f'{k}="{v}"' for k, v in sorted(key))
                for j in np.flatnonzero(~np.isnan(row)).tolist():
                    out.write(f"{family_name}{{{body}}} {format_value(float(row[j]))} "
                              f"{int(times[j])}\n")
        out.write("# EOF\n")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(SPEC, clock=FakeClock(NOW), history=NOW - T0)


@pytest.fixture(scope="module")
def prometheus(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[RealPrometheus]:
    def load(server: RealPrometheus) -> None:
        server.load(fleet, T0, NOW + 10)  # usage, cpu and memory requests, node allocatable
        extra = server.workdir / "allocations.om"
        write_allocations(fleet, T0, NOW + 10, extra)
        server.load_openmetrics(extra)  # more blocks, other series: Prometheus reads both

    with serving(RealPrometheus(tmp_path_factory.mktemp("prometheus-gpu")), load,
                 "dashboard GPU, storage and idle panels") as server:
        yield server


@pytest.fixture(scope="module")
def items() -> list[Panel]:
    resources = ResourcesConfig.model_validate({"gpu": {"resources": GPU_RESOURCES}})
    return panels(Queries(OrgSources.from_config(), resources, IdleConfig()))


def test_allocated_gpus_by_costcenter_and_resource_equal_the_truth(
        prometheus: RealPrometheus, fleet: Fleet, items: list[Panel]) -> None:
    got = hour_of_points(prometheus, panel(items, "Allocated GPUs per hour by costcenter and "
                                                  "GPU resource"), ("costcenter", "resource"))
    truth: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for key, per in fleet.ground_truth(HOUR, HOUR + 3600).items():
        for res, sums in per.items():
            if family(res) == "gpu" and sums.chargeable:
                truth[(fleet.org_labels(key)["costcenter"], KSM[res])] += sums.chargeable
    assert {r for _, r in truth} == set(GPU_RESOURCES)  # whole GPUs and both MIG profiles
    assert_close(got, truth)
    # The totals over a one-hour viewed range, one panel per resource.
    for name, charged in GPU_RESOURCES.items():
        [p] = [p for p in items if p.name == f"Allocated {charged} GPU-hours in the viewed range"]
        expr = sysdig_variables(p.queries[0][0], interval=10, range_=3600)
        [value] = query(prometheus, expr, HOUR + 3600 + 3)  # looked at live, past the hour
        want = sum(v for (_, r), v in truth.items() if r == name)
        assert abs(float(value["value"][1]) - float(want)) < 1e-9 * float(want), name


def test_requested_storage_by_namespace_and_class_equals_the_truth(
        prometheus: RealPrometheus, fleet: Fleet, items: list[Panel]) -> None:
    got = hour_of_points(prometheus, panel(items, "Requested storage (GiB) per hour by "
                                                  "namespace and storage class"),
                         ("kube_cluster_name", "kube_namespace_name", "kube_storageclass_name"))
    truth: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for key, per in fleet.ground_truth(HOUR, HOUR + 3600).items():
        for res, sums in per.items():
            if family(res) == "storage":
                truth[(key.cluster, key.namespace, res.removeprefix("storage."))] += \
                    sums.chargeable
    assert {c for *_, c in truth} == {"standard", "premium-ssd", "nfs", "<none>"}
    assert_close(got, truth)


@pytest.mark.parametrize("res", ["cpu", "memory"])
def test_idle_per_cluster_is_allocatable_less_chargeable(
        prometheus: RealPrometheus, fleet: Fleet, items: list[Panel], res: str) -> None:
    title = "Idle CPU (cores) per cluster" if res == "cpu" else "Idle memory (GiB) per cluster"
    got = hour_of_points(prometheus, panel(items, title), ("kube_cluster_name",))
    charged: dict[str, Decimal] = defaultdict(Decimal)
    for key, per in fleet.ground_truth(HOUR, HOUR + 3600).items():
        if res in per:  # a claim charged on its own has storage alone
            charged[key.cluster] += per[res].chargeable
    offered = fleet.allocatable_truth(HOUR, HOUR + 3600)
    truth = {(c,): offered[c][res] - charged[c] for c in fleet.clusters()}
    # Never overcommitted in any interval here, so the intervals' idle add up to the hour's.
    assert all(v > 0 for v in truth.values())
    assert_close(got, truth)

"""`chargeback-exporter check-sysdig`: safe against the default simulator, loud against each hostile one.

Each hostile tenant breaks one thing the exporter relies on; the command must exit 1 and name
that check, in one line on stderr, after printing the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from chargeback_simulator.allocations import CAPACITY, CLAIM_INFO, GPU_RESOURCES, GPU_UTIL, MOUNTS
from chargeback_simulator.fleet import Fleet
from chargeback_simulator.series import METRIC_NAME, LabelMatcher, SeriesSet
from chargeback_simulator.server import SimulatorServer, Team
from exporter import cli, preflight
from exporter.config import load_config
from exporter.org import OrgModel
from exporter.queries import REQUESTS, plan
from tests.rigs.sim import T0, TOKEN, H, Sim

SCOPED = "scoped-token-93ad"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def sim_factory(sim_factory: Callable[..., Sim]) -> Callable[..., Sim]:
    """Tenants with GPUs (whole and MIG) and claims unless told otherwise: what a cluster that
    bills every configured resource looks like."""

    def make(**kwargs: Any) -> Sim:
        kwargs.setdefault("allocations", True)
        return sim_factory(**kwargs)

    return make


@pytest.fixture
def sim(sim_factory: Callable[..., Sim]) -> Sim:
    return sim_factory()


@pytest.fixture
def check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    """Run `check-sysdig` against `server` on `clock`: (exit code, stdout, stderr)."""

    def call(server: SimulatorServer, token: str = TOKEN, **sections: dict[str, Any]
             ) -> tuple[int, str, str]:
        doc: dict[str, Any] = {"sysdig": {"url": server.url, "token": token, "max_attempts": 1},
                               "periods": {"settle_delay": "2m"},
                               "resources": {"gpu": {"resources": dict(GPU_RESOURCES)}},
                               "logging": {"format": "text", "level": "ERROR"}}
        for section, values in sections.items():
            _merge(doc.setdefault(section, {}), values)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        code = cli.main(["check-sysdig", "--config.file", str(path)], server.clock)
        out, err = capsys.readouterr()
        return code, out, err

    return call


def _merge(section: dict[str, Any], more: dict[str, Any]) -> None:
    """`more` into a config section; a subsection (`resources.gpu`) is updated, not replaced."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value


def rows(out: str) -> dict[str, str]:
    """The result column of each check, from the printed table."""
    found: dict[str, str] = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃|").split("│")]
        if len(cells) >= 3 and cells[1] in ("ok", "FAIL", "warn") and cells[0]:
            found[cells[0]] = cells[1]
    return found


def evidence(out: str, name: str) -> str:
    """The evidence cell of check `name` in the printed table, its wrapped lines joined."""
    text: list[str] = []
    inside = False
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃|").split("│")]
        if len(cells) < 3:
            inside = False  # a rule between rows
            continue
        inside = cells[0] == name or (inside and not cells[0])
        if inside:
            text.append(cells[2])
    return " ".join(text)


def failing(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("chargeback-exporter check-sysdig: error: ") and "Traceback" not in err
    return lines[0]


def at_of(sim: Sim, length: int = H) -> int:
    cfg = load_config(environ={}, overrides={"periods": {"settle_delay": "2m", "length": length}})
    return int(preflight.last_period(sim.clock.time(), cfg).end - 5)


def vector(at: float, value: str) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [at, value]}]}})


def test_the_default_simulator_is_safe_to_bill(sim: Sim, check: Run) -> None:
    code, out, err = check(sim.server)
    assert code == 0, out + err
    results = rows(out)
    for name in ("auth", "team scope", "stamping", "sample grid", "retention", "container labels",
                 "workload kinds", "completed pods", "1d subquery", "headroom"):
        assert name in results, (name, out)
    assert "FAIL" not in results.values(), out
    assert results["auth"] == results["team scope"] == results["stamping"] == "ok"
    assert results["sample grid"] == results["retention"] == results["headroom"] == "ok"
    assert results["container labels"] == "ok"  # named as Sysdig names them
    assert sum(1 for n in results if n.startswith("metric ")) == 7
    assert results["gpu names"] == results["gpu utilization"] == "ok"
    for metric in (CAPACITY, CLAIM_INFO, MOUNTS):
        assert results[f"metric {metric}"] == "ok", out
    assert "aligned to the step" in out  # the simulator stamps range answers as Sysdig does
    assert err == ""


def test_request_series_of_pods_that_do_not_run_are_a_warning_and_not_billed(
        sim_factory: Callable[..., Sim], check: Run) -> None:
    # At 00:20 (a settle delay before now) the seven-minute job is Completed, its request series
    # kept until its TTL at 00:27: kube-state-metrics' behaviour, which billing accounts for.
    sim = sim_factory(now=T0 + 22 * 60)
    code, out, err = check(sim.server)
    assert code == 0 and rows(out)["completed pods"] == "warn", out + err
    assert "not billed" in evidence(out, "completed pods")


def test_prometheus_stamping_is_reported_and_safe(sim_factory: Callable[..., Sim], check: Run) -> None:
    code, out, _ = check(sim_factory(stamping="prometheus").server)
    assert code == 0 and "from start" in out


def test_a_scoped_token_fails(sim_factory: Callable[..., Sim], check: Run) -> None:
    probe = sim_factory()
    cluster = probe.fleet.workloads()[0].key.cluster
    sim = sim_factory(teams={SCOPED: Team.scoped(7, "payments", "kube_cluster_name", cluster)})
    code, out, err = check(sim.server, SCOPED)
    assert "team scope" in failing(code, err)
    assert rows(out)["team scope"] == "FAIL" and "'payments'" in out
    code, out, err = check(sim.server, SCOPED, sysdig={"allow_scoped_team": True})
    assert code == 0 and rows(out)["team scope"] == "warn", out + err


def test_a_wrong_token_fails_auth_and_stops(sim: Sim, check: Run) -> None:
    code, out, err = check(sim.server, "not-a-token")
    assert "auth" in failing(code, err)
    assert rows(out) == {"auth": "FAIL"} and "401" in out


def test_instant_answers_stamped_elsewhere_fail(sim: Sim, check: Run) -> None:
    sim.server.faults.push("/prometheus/api/v1/query", status=200, body=vector(1_700_000_000, "3"),
                           query="count(sysdig_container_cpu_cores_used)")
    code, out, err = check(sim.server)
    assert "stamping" in failing(code, err)
    assert rows(out)["stamping"] == "FAIL" and "1700000000" in out


def test_a_short_10s_retention_fails(sim: Sim, check: Run) -> None:
    now_us = int(sim.clock.time()) * 1_000_000
    body = {"agents": [{"from": now_us - 1800 * 1_000_000, "to": now_us, "sampling": 10_000_000},
                       {"from": now_us - 86400 * 7 * 1_000_000, "to": now_us, "sampling": 60_000_000}]}
    sim.server.faults.push("/api/history/timelines", status=200, body=body)
    code, out, err = check(sim.server)
    assert "retention" in failing(code, err)
    assert rows(out)["retention"] == "FAIL"


def test_timelines_not_served_is_a_warning(sim: Sim, check: Run) -> None:
    sim.server.faults.push("/api/history/timelines", status=404)
    code, out, _ = check(sim.server)
    assert code == 0 and rows(out)["retention"] == "warn"


class DropMetric:
    """The fleet without one metric: Sysdig answers, successfully and empty."""

    def __init__(self, fleet: Fleet, metric: str) -> None:
        self.fleet, self.metric = fleet, metric

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data = self.fleet.select(matchers, start_ms, end_ms)
        keep = [i for i, lb in enumerate(data.labels) if lb.get(METRIC_NAME) != self.metric]
        return SeriesSet([data.labels[i] for i in keep], data.ts, data.values[keep])


def test_a_missing_metric_fails(sim: Sim, check: Run) -> None:
    server = SimulatorServer(DropMetric(sim.fleet, REQUESTS), sim.clock, tokens=[TOKEN]).start()
    try:
        code, out, err = check(server)
    finally:
        server.stop()
    line = failing(code, err)
    assert REQUESTS in line
    results = rows(out)
    failed = {n for n, r in results.items() if r == "FAIL"}
    assert failed and all(REQUESTS in n for n in failed), out
    assert results["metric sysdig_container_cpu_cores_used"] == "ok"


def test_an_answer_at_the_series_cap_fails(sim: Sim, check: Run) -> None:
    cfg = load_config(environ={}, overrides={"periods": {"settle_delay": "2m"}})
    labels = plan(H, 10, "pod", (), OrgModel(cfg.org).label_columns()).labels
    sim.server.faults.push("/prometheus/api/v1/query", status=200,
                           body=vector(at_of(sim), "100000"), query=f"count({labels})")
    code, out, err = check(sim.server)
    assert "headroom" in failing(code, err)
    assert rows(out)["headroom"] == "FAIL" and "100,000" in out


def test_a_day_of_10s_steps_is_required_only_for_daily_periods(
        sim_factory: Callable[..., Sim], check: Run) -> None:
    sim = sim_factory(now=T0 + 14 * H + 300)  # 12 h of history: a day is not there
    code, out, _ = check(sim.server)
    assert code == 0 and rows(out)["1d subquery"] == "warn", out
    code, out, err = check(sim.server, periods={"length": "1d"})
    assert "1d subquery" in failing(code, err)
    assert rows(out)["1d subquery"] == "FAIL"


class DropLabel:
    """The fleet with one label removed from every series."""

    def __init__(self, fleet: Fleet, label: str) -> None:
        self.fleet, self.label = fleet, label

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        if any(m.name == self.label for m in matchers):
            return SeriesSet.empty(self.fleet.select(matchers, start_ms, end_ms).ts)
        data = self.fleet.select(matchers, start_ms, end_ms)
        return SeriesSet([{k: v for k, v in lb.items() if k != self.label} for lb in data.labels],
                         data.ts, data.values)


def test_container_grain_needs_the_container_labels(sim: Sim, check: Run) -> None:
    code, out, _ = check(sim.server, periods={"grain": "container"})
    assert code == 0 and rows(out)["container labels"] == "ok", out
    # Usage series without Sysdig's container label cannot be joined to requests per container.
    server = SimulatorServer(DropLabel(sim.fleet, "container_label_io_kubernetes_container_name"),
                             sim.clock, tokens=[TOKEN]).start()
    try:
        code, out, _ = check(server)
        assert code == 0 and rows(out)["container labels"] == "warn", out
        code, out, err = check(server, periods={"grain": "container"})
    finally:
        server.stop()
    assert "container labels" in failing(code, err)


def test_irregular_samples_fail_the_grid(sim: Sim, check: Run) -> None:
    at = at_of(sim) + 5
    values = [[at - 120 + 15 * i, "1"] for i in range(8)]
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"kube_pod_name": "p"}, "values": values}]}})
    sim.server.faults.push("/prometheus/api/v1/query", status=200, body=body, query="[2m]")
    code, out, err = check(sim.server)
    assert "sample grid" in failing(code, err)
    assert "15 s" in out


def test_no_token_is_one_configuration_line(sim: Sim, check: Run) -> None:
    code, out, err = check(sim.server, "")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "sysdig.token: not set" in err and sim.server.requests == []


def test_idle_capacity_checks_the_allocatable_metric_it_is_configured_with(
        sim: Sim, check: Run) -> None:
    code, out, _ = check(sim.server, idle={"enabled": True})
    results = rows(out)
    assert code == 0, out
    for name in ("cpu", "memory"):
        row = f'metric kube_node_status_allocatable{{resource="{name}"}}'
        assert results[row] == "ok"
        assert "2 cluster(s)" in evidence(out, row)
    # A tenant that names it otherwise: the configured name is checked, and fails loudly.
    code, out, err = check(sim.server, idle={"enabled": True,
                                             "metric": "kube_node_status_allocatable_cpu_cores",
                                             "resources": {"cpu": "cpu"}})
    line = failing(code, err)
    assert "kube_node_status_allocatable_cpu_cores" in line
    assert rows(out)['metric kube_node_status_allocatable_cpu_cores{resource="cpu"}'] == "FAIL"
    # Without idle, nothing is asked about it.
    _, out, _ = check(sim.server)
    assert not [n for n in rows(out) if "allocatable" in n]


def test_a_cluster_without_allocatable_series_fails_when_idle_is_on(sim: Sim, check: Run) -> None:
    cluster = sim.fleet.clusters()[1]
    server = SimulatorServer(HideCluster(sim.fleet, cluster), sim.clock, tokens=[TOKEN]).start()
    try:
        code, out, err = check(server, idle={"enabled": True})
    finally:
        server.stop()
    line = failing(code, err)
    assert cluster in evidence(out, 'metric kube_node_status_allocatable{resource="cpu"}')
    assert "kube_node_status_allocatable" in line


class HideCluster:
    """The fleet without the allocatable series of one cluster (its node exporter is gone)."""

    def __init__(self, inner: Fleet, cluster: str) -> None:
        self.inner = inner
        self.cluster = cluster

    def select(self, matchers: Sequence[LabelMatcher], start_ms: int, end_ms: int) -> SeriesSet:
        data = self.inner.select(matchers, start_ms, end_ms)
        keep = [i for i, lb in enumerate(data.labels)
                if not (lb.get(METRIC_NAME) == "kube_node_status_allocatable"
                        and lb.get("kube_cluster_name") == self.cluster)]
        return SeriesSet([data.labels[i] for i in keep], data.ts, data.values[keep])


@pytest.mark.parametrize(("setting", "failed", "words"), [
    ({"capacity_metric": "kube_pvc_capacity_bytes"}, ["metric kube_pvc_capacity_bytes"],
     "resources.storage.capacity_metric"),
    ({"class_label": "storageclass"}, [f"metric {CLAIM_INFO}"], "resources.storage.class_label"),
    # Without the claim label every claim of a namespace is one: the plan's storage query is
    # refused too (many-to-many matching), which `headroom` shows.
    ({"claim_label": "persistentvolumeclaim"}, [f"metric {CAPACITY}", f"metric {MOUNTS}",
                                                "headroom"], "resources.storage.claim_label"),
    ({"mount_metric": "kube_pod_volumes_info"}, ["metric kube_pod_volumes_info"],
     "resources.storage.mount_metric"),
])
def test_a_storage_name_the_tenant_lacks_fails(sim: Sim, check: Run, setting: dict[str, str],
                                              failed: list[str], words: str) -> None:
    code, out, err = check(sim.server, resources={"storage": setting})
    line = failing(code, err)
    assert all(row in line for row in failed), line
    assert [n for n, r in rows(out).items() if r == "FAIL"] == failed, out
    assert words in evidence(out, failed[0]), out


def test_claims_billed_on_a_tenant_without_claim_series_fail_unless_disabled(
        sim_factory: Callable[..., Sim], check: Run) -> None:
    sim = sim_factory(allocations=False)
    code, out, err = check(sim.server)
    line = failing(code, err)
    assert all(f"metric {m}" in line for m in (CAPACITY, CLAIM_INFO, MOUNTS)), line
    code, out, err = check(sim.server, resources={"storage": {"enabled": False}})
    assert code == 0, out + err
    assert rows(out)["storage names"] == "ok" and rows(out)["gpu names"] == "warn"


def test_a_gpu_resource_requested_but_not_configured_fails(sim: Sim, check: Run) -> None:
    # Only whole GPUs configured: the fleet's MIG slices would go unbilled.
    code, out, err = check(sim.server, resources={"gpu": {"resources": {"nvidia_com_gpu": "gpu"}}})
    line = failing(code, err)
    assert "gpu names" in line
    text = evidence(out, "gpu names")
    assert "nvidia_com_mig_1g_5gb" in text and "nvidia_com_mig_3g_20gb" in text, out
    assert "would not be billed" in text


def test_gpu_utilisation_without_its_labels_is_a_warning(sim: Sim, check: Run) -> None:
    code, out, err = check(sim.server, resources={"gpu": {"utilization_pod_label": "pod_name"}})
    assert code == 0, out + err
    assert rows(out)["gpu utilization"] == "warn"
    assert "with pod_name" in evidence(out, "gpu utilization"), out
    code, out, err = check(sim.server, resources={"gpu": {"utilization_metric": "DCGM_X"}})
    assert code == 0 and rows(out)["gpu utilization"] == "warn", out + err
    assert GPU_UTIL not in evidence(out, "gpu utilization")


def test_gpu_allocatable_is_required_only_where_gpus_are_requested(
        sim_factory: Callable[..., Sim], check: Run) -> None:
    """A cluster without GPU nodes offers no GPU allocatable, and needs none; a cluster whose
    pods request GPUs must show it (its GPU idle capacity would be unknown)."""
    sim = sim_factory(clusters=3, namespaces_per_cluster=1, workloads_per_namespace=1)
    with_gpus = {n.cluster for n in sim.fleet.nodes(T0, T0 + H) if n.gpus}
    assert len(with_gpus) == 1 < len(sim.fleet.clusters())
    names = {"cpu": "cpu", "memory": "memory", "gpu": "nvidia_com_gpu",
             "gpu.mig-1g.5gb": "nvidia_com_mig_1g_5gb"}
    # This small fleet mounts no claims: storage is not what is checked here.
    no_claims = {"storage": {"enabled": False}}
    code, out, _ = check(sim.server, idle={"enabled": True, "resources": names},
                         resources=no_claims)
    results = rows(out)
    assert code == 0, out
    gpu_row = 'metric kube_node_status_allocatable{resource="nvidia_com_gpu"}'
    assert results[gpu_row] == "ok" and "1 cluster(s)" in evidence(out, gpu_row)
    # Nobody requests 1g.5gb slices and no node offers them: nothing to measure.
    mig_row = 'metric kube_node_status_allocatable{resource="nvidia_com_mig_1g_5gb"}'
    assert results[mig_row] == "ok" and "no cluster requests gpu.mig-1g.5gb" in evidence(
        out, mig_row)
    # A misspelt name: the cluster that requests GPUs lacks it.
    code, out, err = check(sim.server, idle={"enabled": True,
                                             "resources": {**names, "gpu": "nvidia_com_gpus"}},
                         resources=no_claims)
    line = failing(code, err)
    assert "nvidia_com_gpus" in line
    [cluster] = with_gpus
    assert cluster in evidence(out, 'metric kube_node_status_allocatable{resource="nvidia_com_gpus"}')

"""The simulator's HTTP API, driven by the real, unmodified sdcclient (and raw requests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sdcclient import SdMonitorClient

from chargeback_simulator.fleet import Fleet
from chargeback_simulator.server import SimulatorServer
from exporter.clock import FakeClock
from exporter.queries import plan
from tests.rigs.small_fleet import NOW, READ_ONLY, SMALL, T0, TIMELINES, TOKEN

Get = Callable[..., requests.Response]
CPU = "sysdig_container_cpu_cores_used"


def test_range_and_instant_queries(client: SdMonitorClient, fleet: Fleet) -> None:
    ok, res = client.get_data_promql(f"sum by (kube_cluster_name) ({CPU})", T0, T0 + 3600, 600)
    assert ok, res
    assert res["status"] == "success" and res["data"]["resultType"] == "matrix"
    series = res["data"]["result"]
    assert {s["metric"]["kube_cluster_name"] for s in series} == {
        w.key.cluster for w in fleet.workloads()}
    for s in series:
        assert [v[0] for v in s["values"]] == list(range(T0, T0 + 3601, 600))
        assert all(isinstance(v[1], str) and float(v[1]) > 0 for v in s["values"])
    q = plan(3600, 10, "pod").chargeable["cpu"]
    ok, res = client.get_data_promql_instant(q, T0 + 3595)
    assert ok and res["data"]["resultType"] == "vector"
    truth = fleet.sample_sums(T0, T0 + 3600)
    got = {(r["metric"]["kube_namespace_name"], r["metric"]["kube_workload_name"]):
           float(r["value"][1]) * 64 for r in res["data"]["result"]}
    assert got == {(k.namespace, k.name): v["cpu"].chargeable for k, v in truth.items()}
    assert all(r["value"][0] == T0 + 3595 for r in res["data"]["result"])


def test_instant_query_defaults_to_the_simulator_clock(client: SdMonitorClient,
                                                       clock: FakeClock) -> None:
    ok, res = client.get_data_promql_instant(f"count({CPU})")
    assert ok and res["data"]["result"][0]["value"][0] == NOW
    clock.advance(-3600)
    ok, res = client.get_data_promql_instant("time()")
    assert ok and res["data"] == {"resultType": "scalar", "result": [NOW - 3600, str(NOW - 3600)]}


def test_rfc3339_times_and_duration_steps(client: SdMonitorClient) -> None:
    ok, res = client.get_data_promql(f"count({CPU})", "2024-01-01T00:00:00Z",
                                     "2024-01-01T01:00:00Z", "30m")
    assert ok, res
    assert [v[0] for v in res["data"]["result"][0]["values"]] == [T0, T0 + 1800, T0 + 3600]


def test_labels_are_sysdig_names_and_blank_values_stay(client: SdMonitorClient,
                                                       fleet: Fleet) -> None:
    ok, res = client.get_data_promql_instant(f"last_over_time({CPU}[1h])", T0 + 3600)
    assert ok
    metrics = [r["metric"] for r in res["data"]["result"]]
    for m in metrics:
        assert {"kube_cluster_name", "kube_namespace_name", "kube_workload_type",
                "kube_workload_name", "kube_pod_name",
                "container_label_io_kubernetes_container_name"} <= set(m)
        assert "kube_pod_container_name" not in m  # kube-state-metrics' label, on requests
        assert "" not in m.values()
    assert {m["kube_workload_type"] for m in metrics} <= {"deployment", "statefulset",
                                                          "daemonset", "job"}
    blank = [w for w in fleet.workloads() if " " in w.labels.values()]
    if blank:
        assert any(" " in m.values() for m in metrics)


def test_unauthorized_and_forbidden(server: SimulatorServer, raw_get: Get) -> None:
    ok, msg = SdMonitorClient(token="wrong", sdc_url=server.url).get_data_promql_instant(CPU)
    assert (ok, msg) == (False, "Unauthorized")
    ok, msg = SdMonitorClient(token=READ_ONLY, sdc_url=server.url).get_data_promql_instant(CPU)
    assert (ok, msg) == (False, "Not enough privileges: Forbidden")
    res = raw_get("/prometheus/api/v1/query", token=None, query=CPU)
    assert res.status_code == 401
    assert res.json() == {"timestamp": NOW * 1000, "status": 401, "error": "Unauthorized",
                          "path": "/prometheus/api/v1/query"}
    res = raw_get("/api/v3/dashboards", token=READ_ONLY)
    assert res.status_code == 403
    assert res.json() == {"errors": [{"reason": "Forbidden", "message": "Not enough privileges"}]}


def test_bad_and_unsupported_queries(client: SdMonitorClient, raw_get: Get) -> None:
    ok, msg = client.get_data_promql_instant("sum(", T0)
    assert not ok and msg.startswith('invalid parameter "query": parse error')
    ok, msg = client.get_data_promql_instant(f"rate({CPU}[5m])", T0)
    assert (ok, msg) == (False, "function rate() is not supported by the simulator")
    res = raw_get("/prometheus/api/v1/query", query="sum(")
    assert res.status_code == 400 and res.json()["errorType"] == "bad_data"
    res = raw_get("/prometheus/api/v1/query", query=f"rate({CPU}[5m])")
    assert res.status_code == 422
    assert res.json() == {"status": "error", "errorType": "execution",
                          "error": "function rate() is not supported by the simulator"}


@pytest.mark.parametrize("params,message", [
    ({"start": T0, "end": T0 - 1, "step": 10}, "end timestamp must not be before start time"),
    ({"start": T0, "end": T0 + 3600, "step": 0}, "zero or negative query resolution step"),
    ({"start": T0, "end": T0 + 110_000, "step": 10}, "exceeded maximum resolution of 11,000"),
    ({"start": "yesterday", "end": T0, "step": 10}, 'cannot parse "yesterday"'),
    ({"start": T0, "end": T0, "step": "fast"}, 'cannot parse "fast" to a valid duration'),
    ({"end": T0, "step": 10}, 'invalid parameter "start"'),
])
def test_range_parameter_validation(raw_get: Get, params: dict[str, object],
                                    message: str) -> None:
    res = raw_get("/prometheus/api/v1/query_range", query=CPU, **params)
    assert res.status_code == 400
    body = res.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert message in body["error"]


def test_11000_points_is_the_limit(client: SdMonitorClient) -> None:
    ok, _ = client.get_data_promql("vector(1)", T0, T0 + 10 * 10_999, 10)
    assert ok
    ok, msg = client.get_data_promql("vector(1)", T0, T0 + 10 * 11_000, 10)
    assert not ok and "11,000 points" in msg


def test_limit_truncates_with_a_warning(client: SdMonitorClient) -> None:
    ok, full = client.get_data_promql_instant(CPU, T0)
    assert ok and len(full["data"]["result"]) > 3 and "warnings" not in full
    ok, res = client.get_data_promql_instant(CPU, T0, limit=3)
    assert ok and len(res["data"]["result"]) == 3
    assert res["data"]["result"] == full["data"]["result"][:3]
    assert res["warnings"] and "truncated" in res["warnings"][0]


def test_post_form_query(server: SimulatorServer) -> None:
    res = requests.post(server.url + "/prometheus/api/v1/query",
                        data={"query": "vector(2)", "time": str(T0)},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert res.status_code == 200
    assert res.json()["data"]["result"] == [{"metric": {}, "value": [T0, "2"]}]


def test_server_side_timeout_answers_503(fleet: Fleet, clock: FakeClock) -> None:
    ticks = iter(range(1000))
    with SimulatorServer(fleet, clock, tokens=[TOKEN],
                         timer=lambda: float(next(ticks)) * 100) as srv:
        res = requests.get(srv.url + "/prometheus/api/v1/query",
                           params={"query": f"sum(sum_over_time({CPU}[1h]))", "time": T0,
                                   "timeout": "2m"},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert res.status_code == 503
    assert res.json()["errorType"] == "timeout"


def test_429_without_retry_after_is_one_request(client: SdMonitorClient,
                                                server: SimulatorServer) -> None:
    server.faults.push("/prometheus/api/v1/query", status=429)
    ok, msg = client.get_data_promql_instant(CPU, T0)
    assert (ok, msg) == (False, "Too many requests")
    assert len(server.requests) == 1


def test_429_with_retry_after_is_retried_three_times(client: SdMonitorClient,
                                                     server: SimulatorServer,
                                                     urllib3_sleeps: list[float]) -> None:
    server.faults.push("/prometheus", status=429, headers={"Retry-After": "1"}, count=4)
    ok, msg = client.get_data_promql_instant(CPU, T0)
    assert (ok, msg) == (False, "Too many requests")
    assert len(server.requests) == 4
    assert urllib3_sleeps == [1.0, 1.0, 1.0]
    server.clear_requests()
    urllib3_sleeps.clear()
    server.faults.push("/prometheus", status=429, headers={"Retry-After": "1"}, count=3)
    ok, res = client.get_data_promql_instant("vector(1)", T0)
    assert ok and res["data"]["result"][0]["value"] == [T0, "1"]
    assert len(server.requests) == 4 and server.faults.pending() == 0


def test_5xx_makes_sdcclient_raise_retry_error(client: SdMonitorClient, server: SimulatorServer,
                                               urllib3_sleeps: list[float]) -> None:
    server.faults.push("/prometheus", status=502, count=4)
    with pytest.raises(requests.exceptions.RetryError):
        client.get_data_promql_instant(CPU, T0)
    assert len(server.requests) == 4
    assert sum(urllib3_sleeps) == pytest.approx(12.0)  # backoff 0 + 4 + 8


def test_5xx_with_zero_retry_adapter(no_retry_client: SdMonitorClient,
                                     server: SimulatorServer) -> None:
    server.faults.push("/prometheus", status=503)
    ok, msg = no_retry_client.get_data_promql_instant(CPU, T0)
    assert (ok, msg) == (False, "simulated upstream failure")
    server.faults.push("/prometheus", status=500, body="<html>oops</html>",
                       headers={"Content-Type": "text/html"})
    assert no_retry_client.get_data_promql_instant(CPU, T0) == (False, "status code 500")
    assert len(server.requests) == 2


def test_malformed_and_truncated_bodies(client: SdMonitorClient, server: SimulatorServer) -> None:
    server.faults.push("/prometheus", status=200, body="{not json")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        client.get_data_promql_instant(CPU, T0)
    server.faults.push("/prometheus", raw=b'HTTP/1.1 200 OK\r\nContent-Type: application/json'
                                          b'\r\nContent-Length: 100\r\n\r\n{"status":"succ')
    with pytest.raises(requests.exceptions.RequestException):
        client.get_data_promql_instant(CPU, T0)
    ok, _ = client.get_data_promql_instant("vector(1)", T0)  # the server is still healthy
    assert ok


def test_delay_fault_uses_the_injected_sleep(fleet: Fleet, clock: FakeClock) -> None:
    slept: list[float] = []
    with SimulatorServer(fleet, clock, tokens=[TOKEN], sleep=slept.append) as srv:
        srv.faults.push("/prometheus/api/v1/query", delay=7.5)
        ok, res = SdMonitorClient(token=TOKEN, sdc_url=srv.url).get_data_promql_instant(
            "vector(1)", T0)
    assert ok and res["data"]["result"][0]["value"][1] == "1"
    assert slept == [7.5]


def test_slow_response_trips_a_client_timeout(fleet: Fleet, clock: FakeClock) -> None:
    release = threading.Event()
    with SimulatorServer(fleet, clock, tokens=[TOKEN],
                         sleep=lambda s: release.wait(s)) as srv:
        srv.faults.push("/prometheus", delay=30)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(srv.url + "/prometheus/api/v1/query", params={"query": "vector(1)"},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=0.2)
        release.set()


def test_faults_match_by_prefix_and_count(client: SdMonitorClient,
                                          server: SimulatorServer) -> None:
    server.faults.push("/api/v3/dashboards", status=429, count=2)
    ok, _ = client.get_data_promql_instant("vector(1)", T0)
    assert ok and server.faults.pending() == 2
    assert client.get_dashboards() == (False, "Too many requests")
    assert client.get_dashboards() == (False, "Too many requests")
    ok, res = client.get_dashboards()
    assert ok and res == {"dashboards": []}
    with pytest.raises(ValueError, match="count"):
        server.faults.push("/x", status=500, count=0)


def test_faults_can_match_the_promql_text(no_retry_client: SdMonitorClient,
                                         server: SimulatorServer) -> None:
    server.faults.push("/prometheus", status=400, query="count(")
    ok, _ = no_retry_client.get_data_promql_instant("vector(1)", T0)
    assert ok and server.faults.pending() == 1
    ok, _ = no_retry_client.get_data_promql_instant(f"count({CPU})", T0)
    assert not ok and server.faults.pending() == 0
    ok, _ = no_retry_client.get_data_promql_instant(f"count({CPU})", T0)
    assert ok


def test_request_log_records_method_path_query_and_headers(client: SdMonitorClient,
                                                           server: SimulatorServer) -> None:
    client.get_data_promql("vector(1)", T0, T0 + 60, 30, timeout="30s", limit=5)
    (req,) = server.requests
    assert (req.method, req.path) == ("GET", "/prometheus/api/v1/query_range")
    assert req.query == {"query": ["vector(1)"], "start": [str(T0)], "end": [str(T0 + 60)],
                         "step": ["30"], "timeout": ["30s"], "limit": ["5"]}
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Sysdig-Product" not in req.headers


def test_timelines_are_the_fleets_relative_to_the_clock(client: SdMonitorClient) -> None:
    ok, res = client.get_data_retention_info()
    assert ok
    agents = res["agents"]
    assert [(a["sampling"], a["from"], a["to"]) for a in agents] == [
        (s * 1_000_000, (NOW - w) * 1_000_000, NOW * 1_000_000) for s, w in TIMELINES]


def test_by_default_the_simulator_serves_the_july_2020_timelines() -> None:
    clock = FakeClock(NOW)
    with SimulatorServer(Fleet(SMALL, clock=clock), clock, tokens=[TOKEN]) as server:
        ok, res = SdMonitorClient(token=TOKEN, sdc_url=server.url).get_data_retention_info()
    assert ok
    windows = [(a["sampling"] // 1_000_000, (a["to"] - a["from"]) // 1_000_000)
               for a in res["agents"]]
    assert windows == [(10, 4 * 3600), (60, 7 * 86400), (600, 14 * 86400), (3600, 60 * 86400),
                       (86400, 450 * 86400)]


def test_a_simulator_without_roll_ups_serves_10s_forever() -> None:
    clock = FakeClock(NOW)
    with SimulatorServer(Fleet(SMALL, clock=clock, timelines=None), clock,
                         tokens=[TOKEN]) as server:
        ok, res = SdMonitorClient(token=TOKEN, sdc_url=server.url).get_data_retention_info()
    assert ok and res["agents"] == [{"from": None, "to": NOW * 1_000_000, "sampling": 10_000_000}]


def test_dashboards_crud_through_sdcclient(client: SdMonitorClient, server: SimulatorServer,
                                          tmp_path: Path) -> None:
    panel = {"id": 1, "type": "advancedTimechart", "name": "CPU",
             "advancedQueries": [{"enabled": True, "query": f"sum({CPU})"}]}
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps({"version": "v3", "dashboard": {
        "name": "ignored", "schema": 3, "panels": [panel], "layout": [], "id": 99,
        "version": 7}}))
    ok, res = client.create_dashboard_from_file("Chargeback", str(path), shared=True)
    assert ok, res
    created = res["dashboard"]
    assert (created["id"], created["version"], created["name"]) == (1, 1, "Chargeback")
    assert created["panels"] == [panel] and created["shared"] is True
    ok, res = client.get_dashboards()
    assert ok and [d["name"] for d in res["dashboards"]] == ["Chargeback"]
    ok, res = client.get_dashboard(1)
    assert ok and res["dashboard"] == created
    ok, res = client.update_dashboard({**created, "name": "Chargeback v2"})
    assert ok and res["dashboard"]["version"] == 2 and res["dashboard"]["name"] == "Chargeback v2"
    ok, msg = client.update_dashboard(created)  # stale version
    assert (ok, msg) == (False, "dashboard version does not match: Conflict")
    assert server.dashboards[1]["version"] == 2
    assert client.delete_dashboard(res["dashboard"]) == [True, None]
    ok, msg = client.get_dashboard(1)
    assert (ok, msg) == (False, "dashboard 1 not found: Not Found")


def test_unknown_route_is_404(raw_get: Get) -> None:
    res = raw_get("/api/data/")
    assert res.status_code == 404 and "errors" in res.json()


def test_concurrent_clients_get_identical_answers(server: SimulatorServer) -> None:
    q = plan(3600, 10, "pod").chargeable["memory"]

    def run(_: int) -> object:
        c = SdMonitorClient(token=TOKEN, sdc_url=server.url)
        ok, res = c.get_data_promql_instant(q, T0 + 3595)
        assert ok
        return res

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(run, range(8)))
    assert all(a == answers[0] for a in answers)
    assert answers[0]["data"]["result"]  # type: ignore[index]


def test_range_answers_are_aligned_to_the_step_by_default(client: SdMonitorClient) -> None:
    # As sdcclient's own examples show for Sysdig: start = now - 300, step = 60 answers on
    # multiples of 60, never at `start + k*step`.
    start = T0 + 3600 + 17
    ok, res = client.get_data_promql(f"count({CPU})", start, start + 300, 60)
    assert ok, res
    stamps = [v[0] for v in res["data"]["result"][0]["values"]]
    assert stamps == list(range(T0 + 3600, T0 + 3600 + 301, 60))
    ok, res = client.get_data_promql(f"count({CPU})", start, start, 60)
    assert ok and [v[0] for v in res["data"]["result"][0]["values"]] == [T0 + 3600]


def test_prometheus_stamping_is_an_option(fleet: Fleet, clock: FakeClock) -> None:
    with SimulatorServer(fleet, clock, tokens=[TOKEN], stamping="prometheus") as srv:
        c = SdMonitorClient(token=TOKEN, sdc_url=srv.url)
        start = T0 + 3600 + 17
        ok, res = c.get_data_promql(f"count({CPU})", start, start + 300, 60)
        assert ok, res
        assert [v[0] for v in res["data"]["result"][0]["values"]] == list(
            range(start, start + 301, 60))
    with pytest.raises(ValueError, match="stamping"):
        SimulatorServer(fleet, clock, stamping="grafana")


def test_queries_without_aggregation_are_truncated_with_a_warning(server: SimulatorServer,
                                                                   client: SdMonitorClient) -> None:
    server.series_limit = 3
    ok, res = client.get_data_promql_instant(CPU, T0 + 3600)
    assert ok and len(res["data"]["result"]) == 3
    assert "more than 3 time series" in res["warnings"][0]
    ok, res = client.get_data_promql_instant(f"sum by (kube_pod_name) ({CPU})", T0 + 3600)
    assert ok and len(res["data"]["result"]) > 3 and "warnings" not in res


def test_aggregated_queries_are_capped_silently(server: SimulatorServer,
                                                client: SdMonitorClient) -> None:
    server.segment_cap = 2
    ok, res = client.get_data_promql_instant(f"sum by (kube_pod_name) ({CPU})", T0 + 3600)
    assert ok and len(res["data"]["result"]) == 2 and "warnings" not in res

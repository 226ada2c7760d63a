"""`dashboard install` through the real sdcclient against the Sysdig simulator's dashboards API."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.server import SimulatorServer
from exporter.cli import main
from exporter.clock import FakeClock
from exporter.dashboard import DEFAULT_NAME
from tests.rigs.paths import ROOT

TOKEN = "sim-token"
SHIPPED = json.loads((ROOT / "exporter" / "data" / "dashboard.json").read_text())


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    # The dashboards API does not read the fleet; a one-namespace fleet keeps start-up instant.
    fleet = Fleet(FleetSpec(clusters=1, namespaces_per_cluster=1, workloads_per_namespace=1))
    with SimulatorServer(fleet, FakeClock(1_700_000_000), tokens=(TOKEN,)) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHARGEBACK_CONFIG_FILE", "CHARGEBACK_SYSDIG__TOKEN", "CHARGEBACK_SYSDIG__URL"):
        monkeypatch.delenv(name, raising=False)


def config(tmp_path: Path, url: str, token: str = TOKEN) -> str:
    path = tmp_path / "exporter.yaml"
    path.write_text(f"sysdig:\n  url: {url}\n  token: {token}\n")
    return str(path)


def install(capsys: pytest.CaptureFixture[str], cfg: str, *extra: str) -> tuple[int, str, str]:
    code = main(["dashboard", "install", "--config.file", cfg, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def calls(sim: SimulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in sim.requests]


def test_creates_the_shipped_dashboard(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = install(capsys, config(tmp_path, sim.url))
    assert code == 0, err
    assert out == f"created dashboard '{DEFAULT_NAME}' (id 1, version 1) on {sim.url}\n"
    [(dash_id, board)] = sim.dashboards.items()
    assert dash_id == 1
    assert board["name"] == DEFAULT_NAME
    assert board["schema"] == 3
    assert board["panels"] == SHIPPED["dashboard"]["panels"]
    assert board["layout"] == SHIPPED["dashboard"]["layout"]
    assert board["shared"] is False
    assert calls(sim) == [("GET", "/api/v3/dashboards"), ("POST", "/api/v3/dashboards")]
    assert {r.headers["Authorization"] for r in sim.requests} == {f"Bearer {TOKEN}"}


def test_second_install_updates_in_place(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = config(tmp_path, sim.url)
    assert install(capsys, cfg)[0] == 0
    # Someone shares it and deletes panels in the UI; install restores panels, keeps sharing.
    board = sim.dashboards[1]
    board.update(shared=True, panels=[], layout=[])
    resp = requests.put(f"{sim.url}/api/v3/dashboards/1", json={"dashboard": board},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert resp.status_code == 200 and resp.json()["dashboard"]["version"] == 2
    sim.clear_requests()

    code, out, err = install(capsys, cfg)
    assert code == 0, err
    assert out == f"updated dashboard '{DEFAULT_NAME}' (id 1, version 3) on {sim.url}\n"
    assert list(sim.dashboards) == [1]
    board = sim.dashboards[1]
    assert board["shared"] is True
    assert board["panels"] == SHIPPED["dashboard"]["panels"]
    assert board["layout"] == SHIPPED["dashboard"]["layout"]
    assert calls(sim) == [
        ("GET", "/api/v3/dashboards"), ("GET", "/api/v3/dashboards/1"), ("PUT", "/api/v3/dashboards/1"),
    ]


def test_reinstall_keeps_what_users_set_in_the_ui(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = config(tmp_path, sim.url)
    assert install(capsys, cfg)[0] == 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # What a user sets in the UI: scope, events overlay, sharing, favourite, a panel edit.
    scope = [{"operand": "kube_cluster_name", "operator": "in", "value": ["prod-eu"],
              "displayName": "cluster", "variable": True, "isVariable": True}]
    ui: dict[str, Any] = {
        "scopeExpressionList": scope,
        "scope": "kube_cluster_name in (\"prod-eu\")",
        "eventsOverlaySettings": {"filterNotificationsUserInputFilter": "severity <= 3",
                                  "showNotificationsDoNotFilterSameMetrics": True},
        "eventDisplaySettings": {"enabled": True, "queryParams": {
            "severities": ["high"], "alertStatuses": [], "categories": ["alert"], "filter": "x",
            "teamScope": True}},
        "shared": True,
        "sharingSettings": [{"role": "ROLE_RESOURCE_READ", "member": {"type": "TEAM", "id": 7}}],
        "public": True,
        "publicToken": "pub-123",
        "publicNotation": {"kube_cluster_name": "prod-eu"},
        "timeSettings": {"from": 0, "to": 3600},
        "description": "edited in the UI",
    }
    board = sim.dashboards[1]
    board.update(ui, panels=board["panels"][:1], layout=board["layout"][:1])
    resp = requests.put(f"{sim.url}/api/v3/dashboards/1", json={"dashboard": board},
                        headers=headers, timeout=5)
    assert resp.status_code == 200
    resp = requests.patch(f"{sim.url}/api/v3/dashboards/1", json={"favorite": True},
                          headers=headers, timeout=5)
    assert resp.status_code == 200

    code, out, err = install(capsys, cfg)
    assert code == 0, err
    assert out.startswith(f"updated dashboard '{DEFAULT_NAME}' (id 1, version 3)")
    board = sim.dashboards[1]
    for key, value in ui.items():
        if key != "description":
            assert board[key] == value, key
    assert board["favorite"] is True
    # Only panels, layout and description are the shipped ones again.
    assert board["panels"] == SHIPPED["dashboard"]["panels"]
    assert board["layout"] == SHIPPED["dashboard"]["layout"]
    assert board["description"] == SHIPPED["dashboard"]["description"]
    assert board["name"] == DEFAULT_NAME


def test_name_option_and_other_dashboards_untouched(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = config(tmp_path, sim.url)
    assert install(capsys, cfg)[0] == 0
    code, out, _ = install(capsys, cfg, "--name", "Billing (prod)", "--shared")
    assert code == 0
    assert out.startswith("created dashboard 'Billing (prod)' (id 2, version 1)")
    boards = sim.dashboards
    assert [b["name"] for b in boards.values()] == [DEFAULT_NAME, "Billing (prod)"]
    assert boards[2]["shared"] is True
    assert boards[1]["version"] == 1


def test_duplicates_update_the_lowest_id_and_warn(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for _ in range(2):
        body: dict[str, Any] = {"dashboard": {"name": DEFAULT_NAME, "schema": 3, "panels": [],
                                              "layout": []}}
        requests.post(f"{sim.url}/api/v3/dashboards", json=body,
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).raise_for_status()
    code, out, err = install(capsys, config(tmp_path, sim.url))
    assert code == 0
    assert out.startswith(f"updated dashboard '{DEFAULT_NAME}' (id 1, version 2)")
    assert f"other dashboards named '{DEFAULT_NAME}' left as they are (ids 2)" in err
    assert sim.dashboards[2]["panels"] == []


def test_wrong_token_is_one_line_without_the_token(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = install(capsys, config(tmp_path, sim.url, token="wrong-t0ken"))
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"chargeback-exporter dashboard: error: Sysdig {sim.url} (list dashboards): "
        "HTTP 401 Unauthorized (wrong or expired token)"
    ]
    assert "wrong-t0ken" not in err
    assert sim.dashboards == {}


def test_sdc_environment_variables_cannot_win(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    # If sdcclient's environment overrides won, the first run would succeed (valid SDC_TOKEN)
    # and the second would go to a closed port (SDC_URL).
    monkeypatch.setenv("SDC_TOKEN", TOKEN)
    monkeypatch.setenv("SDC_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("SDC_SSL_VERIFY", "false")
    code, _, err = install(capsys, config(tmp_path, sim.url, token="config-token"))
    assert code == 1
    assert "HTTP 401" in err
    assert {r.headers["Authorization"] for r in sim.requests} == {"Bearer config-token"}
    code, out, err = install(capsys, config(tmp_path, sim.url))
    assert code == 0, err
    assert out.startswith("created dashboard")


def test_server_error_on_update_is_reported_at_once(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = config(tmp_path, sim.url)
    assert install(capsys, cfg)[0] == 0
    sim.faults.push("/api/v3/dashboards/1", status=503, count=5)
    sim.clear_requests()
    code, out, err = install(capsys, cfg)
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"chargeback-exporter dashboard: error: Sysdig {sim.url} (get dashboard): HTTP 503 "
        "simulated upstream failure"
    ]
    # No urllib3 retry loop: one GET of the dashboard, then the error.
    assert calls(sim) == [("GET", "/api/v3/dashboards"), ("GET", "/api/v3/dashboards/1")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html>maintenance</html>", "malformed response (HTTP 200): body is not JSON"),
        ({"unexpected": []}, "malformed response (HTTP 200): unexpected response shape"),
    ],
)
def test_malformed_answers_are_one_line(
    sim: SimulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    body: Any, expected: str,
) -> None:
    sim.faults.push("/api/v3/dashboards", status=200, body=body)
    code, out, err = install(capsys, config(tmp_path, sim.url))
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"chargeback-exporter dashboard: error: Sysdig {sim.url} (list dashboards): {expected}"
    ]

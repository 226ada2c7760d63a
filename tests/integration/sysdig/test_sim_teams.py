"""Per-token teams: Sysdig's user and team API, and PromQL answers limited to a team's scope."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sdcclient import SdMonitorClient

from chargeback_simulator.fleet import Fleet
from chargeback_simulator.server import DEFAULT_TEAM, SimulatorServer, Team
from exporter.clock import FakeClock
from tests.rigs.small_fleet import NOW, TOKEN

SCOPED = "scoped-token"
CPU = "sysdig_container_cpu_cores_used"


@pytest.fixture
def scoped_server(fleet: Fleet, clock: FakeClock) -> Iterator[tuple[SimulatorServer, str]]:
    cluster = fleet.workloads()[0].key.cluster
    team = Team.scoped(7, "payments", "kube_cluster_name", cluster)
    with SimulatorServer(fleet, clock, tokens=[TOKEN], teams={SCOPED: team}) as srv:
        yield srv, cluster


def test_the_default_team_is_unscoped(server: SimulatorServer) -> None:
    client = SdMonitorClient(token=TOKEN, sdc_url=server.url)
    ok, me = client.get_user_info()
    assert ok, me
    assert me["user"]["currentTeam"] == DEFAULT_TEAM.id
    ok, team = client.get_team_by_id(DEFAULT_TEAM.id)
    assert ok, team
    assert team["id"] == DEFAULT_TEAM.id and team["name"] == DEFAULT_TEAM.name
    assert not team.get("filter")


def test_a_scoped_token_has_a_scoped_current_team(
        scoped_server: tuple[SimulatorServer, str]) -> None:
    server, cluster = scoped_server
    client = SdMonitorClient(token=SCOPED, sdc_url=server.url)
    ok, me = client.get_user_info()
    assert ok and me["user"]["currentTeam"] == 7
    ok, team = client.get_team_by_id(7)
    assert ok and team["name"] == "payments" and team["filter"] == f'kube_cluster_name = "{cluster}"'
    ok, teams = client.get_teams()
    assert ok and {t["id"] for t in teams} == {DEFAULT_TEAM.id, 7}
    ok, missing = client.get_team_by_id(999)
    assert not ok and missing


def test_a_scoped_token_sees_only_its_part_of_the_fleet(
        scoped_server: tuple[SimulatorServer, str], fleet: Fleet) -> None:
    server, cluster = scoped_server
    query = f"count by (kube_cluster_name) ({CPU})"
    full = SdMonitorClient(token=TOKEN, sdc_url=server.url).get_data_promql_instant(query, NOW)
    part = SdMonitorClient(token=SCOPED, sdc_url=server.url).get_data_promql_instant(query, NOW)
    assert full[0] and part[0]
    seen_full = {r["metric"]["kube_cluster_name"] for r in full[1]["data"]["result"]}
    seen_part = {r["metric"]["kube_cluster_name"] for r in part[1]["data"]["result"]}
    assert seen_full == {w.key.cluster for w in fleet.workloads()} and len(seen_full) > 1
    assert seen_part == {cluster}

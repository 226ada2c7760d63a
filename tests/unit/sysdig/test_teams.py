"""Reading a team's scope from Sysdig's user and team API answers (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.errors import SourceAuthError, SourceQueryError, TeamScopeError
from exporter.sysdig.teams import check_team_scope, read_team_scope, scope_text


class FakeSdc:
    """sdcclient's user and team calls, answering from dicts (or raising our errors)."""

    def __init__(self, me: Any, teams: dict[int, Any] | Exception, listing: Any = None) -> None:
        self.me, self.teams, self.listing = me, teams, listing

    def get_user_info(self) -> tuple[bool, Any]:
        if isinstance(self.me, Exception):
            raise self.me
        return True, self.me

    def get_team_by_id(self, ident: int) -> tuple[bool, Any]:
        if isinstance(self.teams, Exception):
            raise self.teams
        return True, self.teams[ident]

    def get_teams(self) -> tuple[bool, Any]:
        return True, self.listing


class FakeClient:
    """`SysdigClient`'s user and team calls, over a `FakeSdc`."""

    def __init__(self, sdc: FakeSdc) -> None:
        self.sdc = sdc

    def user_info(self) -> Any:
        return self.sdc.get_user_info()[1]

    def team(self, ident: int) -> Any:
        return self.sdc.get_team_by_id(ident)[1]

    def teams(self) -> Any:
        return self.sdc.get_teams()[1]


def me(team: Any) -> dict[str, Any]:
    return {"user": {"id": 3, "username": "svc@example.invalid", "currentTeam": team}}


@pytest.mark.parametrize(("team", "expected"), [
    ({"id": 1, "name": "Monitor Operations"}, ""),
    ({"id": 1, "filter": ""}, ""),
    ({"id": 1, "filter": None, "namespaceFilters": {"prometheusRemoteWrite": None}}, ""),
    ({"id": 2, "filter": ' kubernetes.namespace.name = "x" '}, 'kubernetes.namespace.name = "x"'),
    ({"id": 2, "namespaceFilters": {"prometheusRemoteWrite": 'kube_cluster_name in ("a")'}},
     'namespaceFilters.prometheusRemoteWrite: kube_cluster_name in ("a")'),
    ({"id": 2, "filter": "a = 'b'\nand c = 'd'"}, "a = 'b' and c = 'd'"),
])
def test_scope_text(team: dict[str, Any], expected: str) -> None:
    assert scope_text(team) == expected


def test_an_unscoped_current_team_sees_the_whole_fleet() -> None:
    client = FakeClient(FakeSdc(me(1), {1: {"id": 1, "name": "Monitor Operations"}}))
    scope = read_team_scope(client)  # type: ignore[arg-type]
    assert scope.whole_fleet and scope.team_name == "Monitor Operations"
    assert check_team_scope(client, "Sysdig x", allow=False) == scope  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [{"user": {"id": 3}}, {"user": {"currentTeam": "7"}}, [], None,
                                  {"user": {"currentTeam": True}}])
def test_a_user_without_a_current_team_is_unknown(body: Any) -> None:
    client = FakeClient(FakeSdc(body, {}))
    scope = read_team_scope(client)  # type: ignore[arg-type]
    assert scope.unknown == "the user API (/api/user/me) names no current team"
    with pytest.raises(TeamScopeError, match="cannot tell whether the token's current team is scoped"):
        check_team_scope(client, "Sysdig x", allow=False)  # type: ignore[arg-type]


def test_a_current_team_given_as_an_object_is_read_by_its_id() -> None:
    client = FakeClient(FakeSdc(me({"id": 4, "name": "n"}), {4: {"id": 4, "name": "n", "filter": "a = 'b'"}}))
    scope = read_team_scope(client)  # type: ignore[arg-type]
    assert (scope.team_id, scope.scope) == (4, "a = 'b'")


def test_a_team_missing_from_a_malformed_answer_is_unknown() -> None:
    client = FakeClient(FakeSdc(me(4), {4: None}))
    scope = read_team_scope(client)  # type: ignore[arg-type]
    assert scope.scope is None and scope.unknown == "/api/teams/4 answered without a team object"


def test_a_refused_team_is_looked_up_in_the_team_list() -> None:
    sdc = FakeSdc(me(4), SourceQueryError("Sysdig x (team): HTTP 404: Not Found", 404),
                  listing=[{"id": 1, "name": "a"}, {"id": 4, "name": "b", "filter": "f = 'v'"}])
    scope = read_team_scope(FakeClient(sdc))  # type: ignore[arg-type]
    assert (scope.team_name, scope.scope) == ("b", "f = 'v'")
    sdc.listing = [{"id": 1, "name": "a"}]
    scope = read_team_scope(FakeClient(sdc))  # type: ignore[arg-type]
    assert scope.unknown == "/api/teams/4 answered HTTP 404 and /api/teams does not list team 4"


def test_a_rejected_token_is_raised_not_unknown() -> None:
    client = FakeClient(FakeSdc(SourceAuthError("Sysdig x: HTTP 401 Unauthorized", 401), {}))
    with pytest.raises(SourceAuthError, match="401"):
        check_team_scope(client, "Sysdig x", allow=True)  # type: ignore[arg-type]


def test_the_refusal_is_one_line_naming_team_and_scope() -> None:
    client = FakeClient(FakeSdc(me(7), {7: {"id": 7, "name": "payments", "filter": 'ns = "pay"'}}))
    with pytest.raises(TeamScopeError) as caught:
        check_team_scope(client, "Sysdig https://sysdig.example (team scope)", allow=False)  # type: ignore[arg-type]
    text = str(caught.value)
    assert text.startswith("Sysdig https://sysdig.example (team scope): the token's current team "
                           "'payments' (id 7) is scoped to ns = \"pay\"")
    assert "\n" not in text and "sysdig.allow_scoped_team: true" in text

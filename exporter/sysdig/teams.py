"""Which part of the fleet a Sysdig token sees: its current team and that team's scope.

A Sysdig API token belongs to a user and acts in the user's current team. A team with a scope
(a `filter` such as `kubernetes.namespace.name = "x"`) sees only part of the fleet, and every
PromQL answer for its token is silently limited to that part: a bill from it would be partial.
`run`, `backfill` and `report` therefore read the team through Sysdig's user and team API
(`SysdigClient.user_info`, `team`, `teams`) at start and refuse a scoped team, or a team they
cannot read, unless `sysdig.allow_scoped_team` is set (docs/sysdig.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.errors import SourceError, SourceUnavailable, TeamScopeError
from exporter.sysdig.client import SysdigClient

log = logging.getLogger("exporter.teams")

# What the token may be refused with and still be a working token: the API is not served (404)
# or the token may not read users and teams (403). Anything else is raised as it is.
_UNREADABLE = (403, 404)


@dataclass(frozen=True, slots=True)
class TeamScope:
    """What the user and team API said about the token's current team.

    `scope` is the team's restriction as one line ("" when it sees the whole fleet, None when it
    could not be read); `unknown` then says why.
    """

    team_id: int | None
    team_name: str | None
    scope: str | None
    unknown: str | None = None

    @property
    def whole_fleet(self) -> bool:
        """True only when the team was read and has no scope."""
        return self.scope == ""

    def team(self) -> str:
        """The team for messages: `'name' (id N)`, or what is known of it."""
        if self.team_id is None:
            return "the token's current team"
        return f"team {self.team_name!r} (id {self.team_id})" if self.team_name else f"team id {self.team_id}"

    def describe(self) -> str:
        """One line: the team and its scope, or why it is unknown."""
        if self.unknown is not None:
            return f"cannot tell whether {self.team()} is scoped: {self.unknown}"
        if self.scope:
            return f"the token's current {self.team()} is scoped to {self.scope}"
        return f"the token's current {self.team()} has no scope"


def scope_text(team: Mapping[str, Any]) -> str:
    """A team object's restrictions as one line; "" when it sees the whole fleet.

    The scope is the team's `filter`; `namespaceFilters` (per data source) restrict it too.
    """
    parts: list[str] = []
    raw = team.get("filter")
    if raw not in (None, ""):
        parts.append(_line(raw))
    extra = team.get("namespaceFilters")
    if isinstance(extra, Mapping):
        for key in sorted(extra):
            if extra[key] not in (None, ""):
                parts.append(f"namespaceFilters.{key}: {_line(extra[key])}")
    return "; ".join(p for p in parts if p)


def _line(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else str(value)
    return " ".join(text.split())[:200].encode("unicode_escape").decode("ascii")


def read_team_scope(client: SysdigClient) -> TeamScope:
    """The token's current team and its scope, from `/api/user/me` and `/api/teams[/<id>]`.

    A 403 or 404 from the user API, or from both team lookups, and a body without the current
    team make the scope unknown (`TeamScope.unknown`). Raises `SourceAuthError` for a rejected
    token (401), `SourceUnavailable` after retries, `SourceError` for other refusals.
    """
    try:
        me = client.user_info()
    except SourceError as exc:
        if exc.status in _UNREADABLE:
            return TeamScope(None, None, None, f"the user API (/api/user/me) answered HTTP {exc.status}")
        raise
    user = me.get("user") if isinstance(me, dict) else None
    current = user.get("currentTeam") if isinstance(user, dict) else None
    if isinstance(current, dict):
        current = current.get("id")
    if not isinstance(current, int) or isinstance(current, bool):
        return TeamScope(None, None, None, "the user API (/api/user/me) names no current team")
    team, refused = _team(client, current)
    if team is None:
        return TeamScope(current, None, None, refused)
    name = team.get("name")
    return TeamScope(current, name if isinstance(name, str) else None, scope_text(team))


def _team(client: SysdigClient, ident: int) -> tuple[dict[str, Any] | None, str]:
    """The team object with id `ident`, or None and why it could not be read.

    `/api/teams/<id>` first; when that is refused, the team list (which a token that may not
    read one team by id can sometimes list).
    """
    try:
        body = client.team(ident)
    except SourceError as exc:
        if exc.status not in _UNREADABLE:
            raise
        first = f"/api/teams/{ident} answered HTTP {exc.status}"
    else:
        if isinstance(body, dict):
            return body, ""
        return None, f"/api/teams/{ident} answered without a team object"
    try:
        teams = client.teams()
    except SourceError as exc:
        if exc.status not in _UNREADABLE:
            raise
        return None, f"the team API refused it ({first}, /api/teams HTTP {exc.status})"
    for team in teams if isinstance(teams, list) else ():
        if isinstance(team, dict) and team.get("id") == ident:
            return team, ""
    return None, f"{first} and /api/teams does not list team {ident}"


def check_team_scope(client: SysdigClient, where: str, *, allow: bool) -> TeamScope:
    """Refuse a token whose team sees part of the fleet, or whose team cannot be read.

    With `allow`, log a warning instead (each start) and go on, even when Sysdig cannot be
    reached for it. Raises `TeamScopeError` (one line, naming the team and its scope),
    `SourceAuthError` for a rejected token and, unless `allow`, any other `SourceError` or
    `SourceUnavailable`.
    """
    try:
        scope = read_team_scope(client)
    except SourceUnavailable as exc:
        if not allow:
            raise
        scope = TeamScope(None, None, None, str(exc))
    if scope.whole_fleet:
        return scope
    if allow:
        log.warning(f"{where}: {scope.describe()}; billing only what it sees "
                    "(sysdig.allow_scoped_team: true)")
        return scope
    if scope.unknown is not None:
        raise TeamScopeError(
            f"{where}: {scope.describe()}; use a token that may read its user and team "
            "(/api/user/me, /api/teams), or set sysdig.allow_scoped_team: true to bill what "
            "it sees")
    raise TeamScopeError(
        f"{where}: {scope.describe()}, so it sees only part of the fleet and its bills would be "
        "partial; use a service account of an unscoped team, or set "
        "sysdig.allow_scoped_team: true to bill only that part")

"""Every conversation with Sysdig: the only package that imports `sdcclient`.

`client.SysdigClient` makes every call (instant and range PromQL, retention timelines, user and
team, dashboards) through one TLS and session setup, one error classifier and one retry policy;
`answers` is the one parser of PromQL answers, `source.SysdigSource` the usage source (and
`discovery.ShardSource` that of a hash shard, which lists its clusters each period),
`retention` the one model of Sysdig's retention and `teams` the token's team scope. It may
import sdcclient, requests and the exporter's domain modules (clock, errors, retry, model,
periods, queries), never the composition root, commands or sinks. Others import the names below.
"""

from exporter.sysdig.answers import SERIES_CAP, parse_vector
from exporter.sysdig.client import SysdigClient
from exporter.sysdig.discovery import ShardSource
from exporter.sysdig.retention import DOCUMENTED, Pinned, Retention, RetentionModel, Tier
from exporter.sysdig.source import SysdigSource
from exporter.sysdig.teams import TeamScope, check_team_scope, read_team_scope

__all__ = [
    "DOCUMENTED",
    "SERIES_CAP",
    "Pinned",
    "Retention",
    "RetentionModel",
    "ShardSource",
    "SysdigClient",
    "SysdigSource",
    "TeamScope",
    "Tier",
    "check_team_scope",
    "parse_vector",
    "read_team_scope",
]

"""`chargeback-exporter simulate`: flag validation and wiring, in-process (the real subprocess is in
tests/integration/cli/test_simulate_process.py)."""

from __future__ import annotations

import pytest

from chargeback_simulator.command import DEFAULT_TOKEN, build
from exporter import cli
from tests.rigs.small_fleet import T0


@pytest.mark.parametrize("argv,message", [
    (["--clusters", "0"], "clusters must be >= 1"),
    (["--history", "0s"], "--history must be positive"),
    (["--history", "soon"], "not a duration"),
    (["--now", "tomorrow"], "not a time"),
    (["--port", "70000"], "--port must be in 0..65535"),
    (["--token", " "], "--token must not be empty"),
    (["--timelines", "10s=4h,1m"], "--timelines"),
    (["--timelines", "1m=4h"], "timelines must start at 10 s"),
    (["--timelines", "10s=4h,1m=2h"], "coarser and longer"),
    (["--scoped-token", "t:kube_cluster_name"], "--scoped-token must be TOKEN:LABEL=VALUE"),
    (["--scoped-token", ":kube_cluster_name=x"], "--scoped-token must be TOKEN:LABEL=VALUE"),
])
def test_bad_flags_are_one_line_and_exit_2(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chargeback-exporter simulate: error:") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_build_wires_flags_into_fleet_clock_and_server() -> None:
    args = cli.build_parser().parse_args(
        ["simulate", "--seed", "4", "--clusters", "1", "--namespaces", "2", "--workloads", "2",
         "--now", "2024-01-01T02:00:00Z", "--history", "1h", "--token", "a", "--token", "b"])
    fleet, clock, server = build(args)
    assert clock.time() == T0 + 7200
    assert fleet.spec.seed == 4 and len(fleet.workloads()) == 1 * 2 * 2 + 3
    assert fleet.available(0, 10**10) == (T0 + 3600, T0 + 7210)
    assert server.tokens == {"a", "b"}
    assert fleet.timelines == ((10, 4 * 3600), (60, 7 * 86400), (600, 14 * 86400),
                               (3600, 60 * 86400), (86400, 450 * 86400))


@pytest.mark.parametrize(("flag", "timelines"), [
    ("10s=6h,1m=2d,1h=90d", ((10, 6 * 3600), (60, 2 * 86400), (3600, 90 * 86400))),
    ("none", None),
])
def test_timelines_flag_sets_the_tenants_retention(flag: str, timelines: object) -> None:
    args = cli.build_parser().parse_args(["simulate", "--timelines", flag])
    fleet, _, server = build(args)
    assert fleet.timelines == timelines and server.timelines == timelines


def test_a_scoped_token_gets_a_scoped_team() -> None:
    args = cli.build_parser().parse_args(
        ["simulate", "--scoped-token", "pay-token:kube_namespace_name=payments-1",
         "--scoped-token", "eu-token:kube_cluster_name=prod-eu-west-01"])
    _, _, server = build(args)
    assert server.tokens == {DEFAULT_TOKEN, "pay-token", "eu-token"}
    assert server.team_of(DEFAULT_TOKEN).filter == ""
    pay, eu = server.team_of("pay-token"), server.team_of("eu-token")
    assert pay.filter == 'kube_namespace_name = "payments-1"'
    assert eu.filter == 'kube_cluster_name = "prod-eu-west-01"' and eu.id != pay.id


def test_stamping_and_empty_flags_make_the_server_hostile() -> None:
    base = ["simulate", "--now", "2024-01-01T02:00:00Z", "--history", "1h"]
    _, _, server = build(cli.build_parser().parse_args(base))
    assert server.stamping == "sysdig"
    _, _, server = build(cli.build_parser().parse_args(
        [*base, "--stamping", "prometheus", "--empty", "--timelines", "10s=6h"]))
    assert server.stamping == "prometheus" and server.timelines == ((10, 6 * 3600),)
    with server:
        ok = server.handle("GET", "/prometheus/api/v1/query",
                           {"query": ["count(sysdig_container_cpu_cores_used)"],
                            "time": [str(T0 + 3600)]}, {}, b"")
    assert ok[0] == 200 and ok[1]["data"]["result"] == []

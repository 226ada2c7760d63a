"""`chargeback-exporter simulate`: serve a simulated Sysdig Monitor API until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from types import FrameType
from typing import Any

from chargeback_simulator.fleet import DEFAULT_TIMELINES, Fleet, FleetSpec
from chargeback_simulator.hostile import Hiding
from chargeback_simulator.series import Storage
from chargeback_simulator.server import DEFAULT_TEAM, STAMPINGS, SimulatorServer, Team
from exporter.clock import Clock, FakeClock, SystemClock
from exporter.errors import ConfigError
from exporter.periods import parse_duration, parse_time

DEFAULT_TOKEN = "sim-token"  # noqa: S105 - a well-known development token, not a secret


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand."""
    p = subparsers.add_parser(
        "simulate",
        help="serve a simulated Sysdig Monitor API (PromQL, dashboards) on loopback",
        description="Serve a deterministic synthetic fleet through Sysdig's Prometheus-compatible "
                    "API, for demos and tests. Prints the URL, then serves until SIGINT/SIGTERM.",
    )
    p.add_argument("--seed", type=int, default=1, help="fleet seed (default 1)")
    p.add_argument("--clusters", type=int, default=2, help="clusters (default 2)")
    p.add_argument("--namespaces", type=int, default=3,
                   help="namespaces per cluster (default 3)")
    p.add_argument("--workloads", type=int, default=4,
                   help="workloads per namespace (default 4)")
    p.add_argument("--replicas", type=int, default=3, help="max replicas per workload (default 3)")
    p.add_argument("--containers", type=int, default=3,
                   help="max containers per pod (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    p.add_argument("--token", action="append", default=None, metavar="T",
                   help=f"accepted Bearer token, repeatable (default {DEFAULT_TOKEN!r})")
    p.add_argument("--scoped-token", action="append", default=[], metavar="TOKEN:LABEL=VALUE",
                   help="an accepted token whose team sees only the series with LABEL=VALUE, "
                        "repeatable (e.g. t:kube_namespace_name=payments-1)")
    p.add_argument("--now", default=None, metavar="RFC3339",
                   help="freeze the simulator's clock at this time (default: follow real time)")
    p.add_argument("--history", default="24h",
                   help="how far before now the data starts (default 24h)")
    p.add_argument("--timelines", default=None, metavar="SAMPLING=WINDOW,...",
                   help="the tenant's retention, finest first, e.g. 10s=4h,1m=1w,10m=2w,1h=60d,"
                        "1d=450d (the default, Sysdig's July 2020 table); 'none': 10 s data "
                        "forever, never rolled up")
    p.add_argument("--stamping", choices=STAMPINGS, default="sysdig",
                   help="how range answers are stamped: aligned to the step as Sysdig does "
                        "(default), or at start + k*step as Prometheus does")
    p.add_argument("--empty", action="store_true",
                   help="answer every query with no series at all, as Sysdig does for a renamed "
                        "metric, a stopped agent or a team that sees nothing")
    p.set_defaults(handler=simulate)


def build(args: argparse.Namespace, clock: Clock | None = None
          ) -> tuple[Fleet, Clock, SimulatorServer]:
    """Validate the flags and build (fleet, clock, unstarted server); raises ConfigError.

    `--now` pins a fake clock; otherwise the simulator runs on `clock` (default: the system's).
    """
    try:
        spec = FleetSpec(seed=args.seed, clusters=args.clusters,
                         namespaces_per_cluster=args.namespaces,
                         workloads_per_namespace=args.workloads, max_replicas=args.replicas,
                         max_containers=args.containers)
        history = parse_duration(args.history)
        if args.now is not None:
            clock = FakeClock(parse_time(args.now))
        elif clock is None:
            clock = SystemClock()
        timelines = parse_timelines(args.timelines)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if history <= 0:
        raise ConfigError(f"--history must be positive, got {args.history!r}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    try:
        fleet = Fleet(spec, clock=clock, history=history, timelines=timelines)
    except ValueError as exc:
        raise ConfigError(f"--timelines: {exc}") from None
    tokens = args.token or [DEFAULT_TOKEN]
    if any(not t.strip() for t in tokens):
        raise ConfigError("--token must not be empty")
    teams: dict[str, Team] = {}
    for i, text in enumerate(args.scoped_token):
        m = re.fullmatch(r"([^:\s]+):([a-zA-Z_][a-zA-Z0-9_]*)=(.*)", text)
        if m is None:
            raise ConfigError(f"--scoped-token must be TOKEN:LABEL=VALUE, got {text!r}")
        teams[m[1]] = Team.scoped(DEFAULT_TEAM.id + 1 + i, f"scoped to {m[2]}={m[3]}", m[2], m[3])
    storage: Storage = fleet
    if args.empty:
        hiding = Hiding(fleet)
        hiding.hide_all()
        storage = hiding
    server = SimulatorServer(storage, clock, tokens=tokens, host=args.host, port=args.port,
                             teams=teams, stamping=args.stamping)
    server.timelines = fleet.timelines  # the wrapper has none of its own
    return fleet, clock, server


def parse_timelines(text: str | None) -> tuple[tuple[int, int], ...] | None:
    """`--timelines`: `10s=4h,1m=1w,...` as (sampling, window) seconds; `none` is None; not
    given is the July 2020 table. Raises ValueError."""
    if text is None:
        return DEFAULT_TIMELINES
    if text.strip().lower() == "none":
        return None
    out = []
    for item in text.split(","):
        sampling, sep, window = item.partition("=")
        if not sep:
            raise ValueError(f"--timelines: expected SAMPLING=WINDOW, got {item.strip()!r}")
        out.append((parse_duration(sampling), parse_duration(window)))
    return tuple(out)


def simulate(args: argparse.Namespace, *, clock: Clock) -> int:
    """Run the simulator in the foreground; returns 0 after SIGINT/SIGTERM."""
    fleet, clock, server = build(args, clock)
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        now = int(clock.time())
        pods = len(fleet.pods(now - 10, now + 1))
        auth = (f"token {DEFAULT_TOKEN!r}" if args.token is None
                else f"{len(args.token)} token(s) from --token")
        print(f"Sysdig simulator serving {server.url} "
              f"({len(fleet.workloads())} workloads, {pods} pods now; {auth})", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    print("Sysdig simulator stopped", file=sys.stderr, flush=True)
    return 0

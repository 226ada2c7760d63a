"""Subcommand `run`: the long-running worker, or one catch-up pass with `--once`.

    chargeback-exporter run [--config.file F] [--once] [--web.listen-address ADDR]

Without `--once` the worker exports on a schedule and serves `/healthz`, `/readyz` and
`/metrics` until SIGTERM or SIGINT, then shuts down gracefully and exits 0. With `--once` it
exports every closed period from the checkpoint (or `periods.start`, or the last closed period)
up to now minus the settle delay and exits 0, or non-zero with one line on failure. A fenced
instance exits 4.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.clock import Clock
from exporter.commands import add_common, check_team, config_from_args
from exporter.config import Config
from exporter.health import HealthServer, HealthState
from exporter.metrics import Metrics
from exporter.periods import iso
from exporter.sink import CheckpointStore, PeriodSink
from exporter.stopping import stop_on_signals
from exporter.wiring import build_health_server, build_worker_parts
from exporter.worker import ExportPipeline, Worker

log = logging.getLogger("exporter.run")

Parts = tuple[ExportPipeline, PeriodSink, CheckpointStore]
Build = Callable[[Config, Clock, Metrics], Parts]
"""Builds the pipeline, the sink and the checkpoint store from configuration (no I/O yet)."""


@dataclass
class Service:
    """A worker and, unless disabled, the HTTP server reporting on it."""

    worker: Worker
    health: HealthServer | None
    metrics: Metrics


def assemble(cfg: Config, clock: Clock, metrics: Metrics, build: Build, *, serve_http: bool,
             preflight: Callable[[], None] | None = None) -> Service:
    """Wire a `Service`. The listen address is validated before any adapter is built;
    `preflight` runs at the worker's start, once the producer (and its settings) are up."""
    state = HealthState(clock, cfg.periods.length, cfg.periods.settle_delay)
    health = build_health_server(cfg, state, metrics) if serve_http and cfg.web.enabled else None
    pipeline, sink, checkpoints = build(cfg, clock, metrics)
    worker = Worker(pipeline, sink, checkpoints, clock, cfg.periods, cfg.worker, metrics,
                    cfg.instance_id, state, clusters=cfg.clusters,
                    retired_clusters=cfg.sysdig.retired_clusters,
                    owns=cfg.shard.owns if cfg.shard.sharded else None, preflight=preflight)
    return Service(worker, health, metrics)


def execute(service: Service, *, once: bool) -> int:
    """Run the service: one catch-up pass (`once`) or until signalled. Returns the exit code.

    Raises `ExporterError` (one line for the CLI) on failure; `FencedError` carries exit code 4.
    """
    worker = service.worker
    with stop_on_signals(worker):
        if once:
            exported = worker.run_once()
            if not worker.stopped_early:
                nxt = worker.next_period_start
                log.info("caught up", extra={"periods": len(exported),
                                             "next_period_start": None if nxt is None else iso(nxt)})
            return 0
        if service.health is not None and not worker.stopping:
            service.health.start()
        try:
            return worker.serve()
        finally:
            if service.health is not None:
                service.health.stop()


def cmd_run(args: argparse.Namespace, *, clock: Clock, build: Build | None = None) -> int:
    overrides: dict[str, Any] = {}
    if args.web_listen_address is not None:
        overrides["web"] = {"listen_address": args.web_listen_address}
    cfg = config_from_args(args, overrides or None)
    # The token's Sysdig team must see the whole fleet (exporter.sysdig.teams); an injected `build`
    # (tests) brings its own parts and skips it.
    preflight = None if build is not None else (lambda: check_team(cfg, clock))
    service = assemble(cfg, clock, Metrics(), build or build_worker_parts, serve_http=not args.once,
                       preflight=preflight)
    return execute(service, once=args.once)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="export closed periods to Kafka on a schedule (or once, with --once)",
        description="Export every closed period from the checkpoint on, one Kafka transaction each.",
    )
    add_common(p)
    p.add_argument("--once", action="store_true",
                   help="export every closed period up to now minus the settle delay, then exit")
    p.add_argument("--web.listen-address", dest="web_listen_address", default=None,
                   help="host:port for /healthz, /readyz and /metrics (overrides web.listen_address)")
    p.set_defaults(handler=cmd_run)

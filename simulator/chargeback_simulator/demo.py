"""`chargeback-exporter demo`: the whole job on an embedded default, in one command.

It starts a local Kafka-compatible broker (noida-db) and the Sysdig simulator, exports the last
few closed hours exactly as the live worker does (`run --once`), then reads the records back as
a billing platform would (read_committed, latest revision per record_id) and shows them summed
by cost center next to the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from chargeback_simulator.fleet import Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.clock import Clock
from exporter.commands import register_secrets
from exporter.config import load_config
from exporter.consumer import latest_records, read_manifests, read_records
from exporter.errors import ExporterError
from exporter.logs import setup
from exporter.metrics import Metrics
from exporter.periods import align_down, iso
from exporter.run import assemble, execute
from exporter.units import method_step
from exporter.wiring import build_codec, build_worker_parts

TOKEN = "demo-token"  # noqa: S105 - the embedded simulator accepts this token only
Q = Decimal("0.000001")
NANO = Decimal("1e-9")
IDLE = "__idle__"


def _sum_truth(fleet: Any, steps: dict[int, int], length: int
               ) -> dict[tuple[str, str], list[Decimal]]:
    """Ground truth per (cluster, costcenter) of the periods starting at `steps`' keys, each at
    the step its records were measured at (older than Sysdig's 10 s window: rolled-up data).

    Idle capacity is the (cluster, `__idle__`) row: per period, the nodes' allocatable less the
    workloads' chargeable, each rounded to 9 decimals as its record is, never below 0."""
    out: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for s, step in steps.items():
        charged: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
        for key, per in fleet.ground_truth(s, s + length, resolution=step).items():
            cc = fleet.org_labels(key)["costcenter"]
            for i, res in enumerate(("cpu", "memory")):
                out[(key.cluster, cc)][i] += per[res].chargeable
                charged[(key.cluster, i)] += per[res].chargeable.quantize(NANO, ROUND_HALF_EVEN)
        for cluster, per in fleet.allocatable_truth(s, s + length, resolution=step).items():
            for i, res in enumerate(("cpu", "memory")):
                offered = per[res].quantize(NANO, ROUND_HALF_EVEN)
                out[(cluster, IDLE)][i] += max(Decimal(0), offered - charged[(cluster, i)])
    return out


def cmd_demo(args: argparse.Namespace, *, clock: Clock) -> int:

    console = Console(width=160)
    setup("WARNING", "text")
    length = 3600
    now = int(clock.time())
    settle = 60
    last_end = align_down(now - settle, length)
    first = last_end - args.periods * length
    fleet = Fleet(FleetSpec(seed=args.seed, clusters=2, namespaces_per_cluster=3,
                            workloads_per_namespace=4), clock=clock,
                  history=(args.periods + 1) * length + 600)
    console.print(f"[bold]Sysdig chargeback exporter demo[/bold]: {len(fleet.workloads())} workloads "
                  f"in 2 clusters, periods {iso(first)} to {iso(last_end)}")
    with LocalBroker("noida") as broker, SimulatorServer(fleet, clock, tokens=[TOKEN]) as sim:
        console.print(f"  Sysdig simulator  {sim.url}\n  Kafka (noida-db)  {broker.bootstrap}")
        cfg = load_config(environ={}, overrides={
            "sysdig": {"url": sim.url, "token": TOKEN},
            "periods": {"start": first, "settle_delay": settle},
            "kafka": {"bootstrap_servers": broker.bootstrap, "replication_factor": 1,
                      "partitions": 3, "transactional_id": "chargeback-demo"},
            "logging": {"level": "WARNING", "format": "text"},
            "idle": {"enabled": True},
        })
        register_secrets(cfg)
        service = assemble(cfg, clock, Metrics(), build_worker_parts, serve_http=False)
        code = execute(service, once=True)
        if code != 0:
            return code
        codec = build_codec(cfg)
        records = list(read_records(cfg.kafka, codec))
        latest = latest_records(records)
        manifests = list(read_manifests(cfg.kafka, codec))
        console.print(f"  exported {args.periods} periods: {len(records)} records and "
                      f"{len(manifests)} manifests committed; a read_committed consumer sees "
                      f"{len(latest)} distinct record_ids\n")
        got: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for r in latest.values():
            # The bill and the idle capacity nobody was billed (docs/records.md): a cluster's
            # rows add up to its nodes' allocatable.
            if r.allocation in ("direct", "shared-distribution", "idle", "idle-distribution"):
                got[(r.cluster, r.costcenter)][0 if r.resource == "cpu" else 1] += \
                    r.chargeable_quantity
        steps = {first + i * length: 10 for i in range(args.periods)}
        for r in latest.values():
            step = method_step(r.method)
            if step is None:
                raise ExporterError(f"demo: record {r.record_id} has an unknown method {r.method}")
            steps[r.period_start // 1000] = step
        truth = _sum_truth(fleet, steps, length)
        table = Table(title="Chargeable units by cost center, and idle capacity (__idle__): Kafka "
                            "records vs simulator ground truth")
        for col in ("cluster", "costcenter", "Core-Hours (Kafka)", "Core-Hours (truth)",
                    "GiB-Hours (Kafka)", "GiB-Hours (truth)", "match"):
            table.add_column(col, justify="left" if col in ("cluster", "costcenter") else "right")
        ok = True
        for key in sorted(set(got) | set(truth)):
            g, t = got.get(key, [Decimal(0)] * 2), truth.get(key, [Decimal(0)] * 2)
            # records are quantized to 1e-9 each; sums agree to well within 1e-6 per group
            match = all(abs(a - b) < Q for a, b in zip(g, t, strict=True))
            ok &= match
            table.add_row(*key, *(str(v.quantize(Q, ROUND_HALF_EVEN)) for v in (g[0], t[0], g[1], t[1])),
                          "[green]yes[/green]" if match else "[red]NO[/red]")
        console.print(table)
        capacity = Table(title="Node capacity per cluster (manifests): charged + idle - "
                               "overcommit = allocatable, exactly")
        for col in ("cluster", "resource", "allocatable", "charged", "idle", "overcommit",
                    "exact"):
            capacity.add_column(col, justify="left" if col in ("cluster", "resource") else "right")
        sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
        newest = {m.manifest_id: m for m in sorted(manifests, key=lambda m: m.revision)}
        for m in newest.values():
            for c in m.capacity:
                row = sums[(m.cluster, f"{c.resource} ({c.unit})")]
                for i, v in enumerate((c.allocatable_quantity, c.charged_quantity,
                                       c.idle_quantity, c.overcommit_quantity)):
                    row[i] += v
        for key, (offered, charged, idle, over) in sorted(sums.items()):
            exact = charged + idle - over == offered
            ok &= exact
            capacity.add_row(*key, *(format(v, "f") for v in (offered, charged, idle, over)),
                             "[green]yes[/green]" if exact else "[red]NO[/red]")
        console.print(capacity)
        console.print("Every (period, workload, resource) once:",
                      "[green]yes[/green]" if len(latest) == len(records) else "[red]NO[/red]")
    logging.shutdown()
    return 0 if ok and len(latest) == len(records) else 1


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="simulator + local broker: export a few periods and show them")
    p.add_argument("--periods", type=int, default=3, help="closed hours to export (default 3)")
    p.add_argument("--seed", type=int, default=1, help="fleet seed")
    p.set_defaults(handler=cmd_demo)

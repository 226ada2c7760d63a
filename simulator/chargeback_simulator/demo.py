"""`chargeback-exporter demo`: the whole job on an embedded default, in one command.

It starts a local Kafka-compatible broker (noida-db) and the Sysdig simulator (a fleet with
GPUs, MIG slices and persistent volume claims, and nodes that come and go), exports the last few
closed hours exactly as the live worker does (`run --once`, idle capacity on, priced by the
embedded rate card `PRICES`), then reads the records back as a billing platform would
(read_committed, latest revision per record_id) and shows them summed by cost center, each
resource and the cost next to the simulator's ground truth, rounded per record as records are.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from chargeback_simulator.allocations import GPU_RESOURCES
from chargeback_simulator.fleet import DEFAULT_TIMELINES, Fleet, FleetSpec
from chargeback_simulator.localbroker import LocalBroker
from chargeback_simulator.server import SimulatorServer
from exporter.clock import Clock
from exporter.commands import register_secrets
from exporter.config import load_config
from exporter.consumer import latest_records, read_manifests, read_records
from exporter.errors import ConfigError, ExporterError
from exporter.logs import setup
from exporter.metrics import Metrics
from exporter.model import UNALLOCATED, WorkloadKey, resource_order, unit_of
from exporter.periods import align_down, iso
from exporter.pricing import quantize_cost, quantize_quantity
from exporter.records import BillingRecord, PeriodManifest
from exporter.report import print_table
from exporter.run import assemble, execute
from exporter.units import method_step
from exporter.wiring import build_codec, build_worker_parts

TOKEN = "demo-token"  # noqa: S105 - the embedded simulator accepts this token only
IDLE = "__idle__"
CLAIM_KIND = "persistentvolumeclaim"
# The embedded rate card, EUR per unit-hour: every GPU profile and storage class of the fleet
# has its own price (a resource without one would fail the period, never bill 0).
PRICES: Mapping[str, str] = {
    "cpu": "0.0310", "memory": "0.0042", "gpu": "2.4800", "gpu.mig-1g.5gb": "0.3700",
    "gpu.mig-3g.20gb": "1.0900", "storage.standard": "0.00014", "storage.premium-ssd": "0.00031",
    "storage.<none>": "0.00010", "storage.nfs": "0.00022"}
# What a row adds up: the bill and the idle capacity nobody was billed (docs/records.md); a
# cluster's rows add up to its nodes' allocatable.
SHOWN = ("direct", "shared-distribution", "idle", "idle-distribution")
# `idle.resources`: each charged resource -> the nodes' allocatable `resource` label.
IDLE_RESOURCES: Mapping[str, str] = {
    "cpu": "cpu", "memory": "memory",
    **{charged: name for name, charged in GPU_RESOURCES.items()}}

Sums = dict[tuple[str, str], dict[str, Decimal]]
"""(cluster, costcenter) -> resource (and `cost`) -> quantity (and EUR)."""


def rate_card(distribute: str | None) -> dict[str, Any]:
    card: dict[str, Any] = {"currency": "EUR", "versions": [
        {"id": "demo", "effective_from": "2020-01-01T00:00:00Z", "default": dict(PRICES)}]}
    if distribute is not None:
        card["idle"] = {"distribute": distribute}
    return card


def period_steps(manifests: Iterable[PeriodManifest]) -> dict[int, int]:
    """Period start (s) -> the sample step its records were measured at, from the manifests'
    `method`, always the period's measurement method (a record's may be a distribution's,
    `shared-proportional/v1` or `idle-even/v1`, which has no step of its own)."""
    steps: dict[int, int] = {}
    for m in manifests:
        step = method_step(m.method)
        if step is None:
            raise ExporterError(f"demo: manifest {m.manifest_id} has an unknown method {m.method}")
        steps[m.period_start // 1000] = step
    return steps


def _add(sums: Sums, key: tuple[str, str], resource: str, quantity: Decimal,
         cost: Decimal) -> None:
    row = sums.setdefault(key, {})
    row[resource] = row.get(resource, Decimal(0)) + quantity
    row["cost"] = row.get("cost", Decimal(0)) + cost


def _price(resource: str, quantity: Decimal) -> Decimal:
    return quantize_cost(quantity * Decimal(PRICES[resource]))


def ground_truth(fleet: Fleet, steps: Mapping[int, int], length: int) -> Sums:
    """The simulator's truth for the periods starting at `steps`' keys, each at the step its
    records were measured at, per (cluster, costcenter) and resource: every (period, workload,
    resource) rounded to 9 decimals and priced as its record is, then added up.

    A claim that no pod mounts goes to its namespace's cost center. Idle capacity is the
    (cluster, `__idle__`) row, whether or not the rate card distributes it: per period and
    resource, the nodes' allocatable less the cluster's charges, never below 0."""
    out: Sums = {}
    namespace_cc = {(w.key.cluster, w.key.namespace):
                    w.namespace_labels.get("costcenter", "").strip() or UNALLOCATED
                    for w in fleet.workloads()}
    for start, step in steps.items():
        charged: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for key, per in fleet.ground_truth(start, start + length, resolution=step).items():
            cc = _costcenter(fleet, key, namespace_cc)
            for resource, sums in per.items():
                q = quantize_quantity(sums.chargeable)
                _add(out, (key.cluster, cc), resource, q, _price(resource, q))
                charged[(key.cluster, resource)] += q
        for cluster, offers in fleet.allocatable_truth(start, start + length,
                                                       resolution=step).items():
            for resource, offered in offers.items():
                idle = max(Decimal(0), quantize_quantity(offered) - charged[(cluster, resource)])
                _add(out, (cluster, IDLE), resource, idle, _price(resource, idle))
    return out


def _costcenter(fleet: Fleet, key: WorkloadKey, namespace_cc: Mapping[tuple[str, str], str]
                ) -> str:
    if key.kind == CLAIM_KIND:
        return namespace_cc.get((key.cluster, key.namespace), UNALLOCATED)
    return fleet.org_labels(key)["costcenter"]


def published(records: Iterable[BillingRecord]) -> Sums:
    """What the records say, per (cluster, costcenter) and resource: the rows `SHOWN` adds up,
    with the idle shares (`idle-distribution`) on their cluster's `__idle__` row, to set against
    the truth's idle."""
    out: Sums = {}
    for r in records:
        if r.allocation not in SHOWN:
            continue
        cc = IDLE if r.allocation == "idle-distribution" else r.costcenter
        _add(out, (r.cluster, cc), r.resource, r.chargeable_quantity, r.cost or Decimal(0))
    return out


def cmd_demo(args: argparse.Namespace, *, clock: Clock) -> int:
    console = Console(width=200)
    setup("WARNING", "text")
    length = 3600
    now = int(clock.time())
    settle = 60
    last_end = align_down(now - settle, length)
    # The simulator keeps GPUs and claims (and their truth) at 10 s only: the periods must lie
    # in Sysdig's 10 s window, or the records would be measured at a coarser step.
    window = DEFAULT_TIMELINES[0][1]
    most = (window - (now - last_end)) // length
    periods = min(3, most) if args.periods is None else int(args.periods)
    if not 1 <= periods <= most:
        raise ConfigError(f"demo: --periods must be 1 to {most}: older hours are past the "
                          f"simulator's 10 s window ({window // 3600} h), and its GPUs and "
                          "claims exist at 10 s only")
    first = last_end - periods * length
    fleet = Fleet(FleetSpec(seed=args.seed, clusters=2, namespaces_per_cluster=3,
                            workloads_per_namespace=4, allocations=True), clock=clock,
                  history=(periods + 1) * length + 600)
    console.print(f"[bold]Sysdig chargeback exporter demo[/bold]: {len(fleet.workloads())} workloads "
                  f"in 2 clusters (GPUs, MIG slices, persistent volume claims), periods "
                  f"{iso(first)} to {iso(last_end)}")
    with (tempfile.TemporaryDirectory(prefix="chargeback-demo-") as tmp,
          LocalBroker("noida") as broker, SimulatorServer(fleet, clock, tokens=[TOKEN]) as sim):
        card = Path(tmp) / "rate-card.yaml"
        card.write_text(yaml.safe_dump(rate_card(args.distribute_idle)), encoding="utf-8")
        console.print(f"  Sysdig simulator  {sim.url}\n  Kafka (noida-db)  {broker.bootstrap}")
        cfg = load_config(environ={}, overrides={
            "sysdig": {"url": sim.url, "token": TOKEN},
            "periods": {"start": first, "settle_delay": settle},
            "kafka": {"bootstrap_servers": broker.bootstrap, "replication_factor": 1,
                      "partitions": 3, "transactional_id": "chargeback-demo"},
            "logging": {"level": "WARNING", "format": "text"},
            "resources": {"gpu": {"resources": GPU_RESOURCES}},
            "pricing": {"rate_card_file": str(card)},
            # Idle capacity of cpu, memory and every GPU resource the nodes offer.
            "idle": {"enabled": True, "resources": IDLE_RESOURCES},
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
        console.print(f"  exported {periods} periods: {len(records)} records and "
                      f"{len(manifests)} manifests committed; a read_committed consumer sees "
                      f"{len(latest)} distinct record_ids\n")
        truth = ground_truth(fleet, period_steps(manifests), length)
        ok = _show_bill(console, published(latest.values()), truth, args.distribute_idle)
        ok &= _show_capacity(console, manifests)
        console.print("Every (period, workload, resource) once:",
                      "[green]yes[/green]" if len(latest) == len(records) else "[red]NO[/red]")
    logging.shutdown()
    return 0 if ok and len(latest) == len(records) else 1


def _show_bill(console: Console, got: Sums, truth: Sums, distributed: str | None) -> bool:
    """The records by cost center, a column per resource and the cost; a row is `exact` when
    every one of its figures is the truth's."""
    resources = sorted({r for row in (*got.values(), *truth.values()) for r in row
                        if r != "cost"}, key=resource_order)
    note = ("__idle__: idle capacity nobody was billed" if distributed is None else
            f"__idle__: idle capacity, billed to the cost centers ({distributed}); here the "
            "sum of their shares")
    table = Table(title="Chargeable units and cost by cost center: Kafka records against the "
                        "simulator's ground truth, rounded and priced per record",
                  caption=note)
    table.add_column("cluster")
    table.add_column("costcenter")
    for r in resources:
        table.add_column(f"{r}\n{unit_of(r)}", justify="right")
    table.add_column("cost\nEUR", justify="right")
    table.add_column("truth", justify="right")
    ok = True
    zero = Decimal(0)
    for key in sorted(set(got) | set(truth)):
        row, want = got.get(key, {}), truth.get(key, {})
        match = all(row.get(c, zero) == want.get(c, zero) for c in (*resources, "cost"))
        ok &= match
        table.add_row(*key, *(format(quantize_quantity(row.get(c, zero)), "f")
                              for c in resources),
                      format(quantize_cost(row.get("cost", zero)), "f"),
                      "[green]exact[/green]" if match else "[red]NO[/red]")
    print_table(table, sys.stdout.write, fit=True)
    return ok


def _show_capacity(console: Console, manifests: Iterable[PeriodManifest]) -> bool:
    capacity = Table(title="Node capacity per cluster (manifests): charged + idle - "
                           "overcommit = allocatable, exactly")
    for col in ("cluster", "resource", "allocatable", "charged", "idle", "overcommit",
                "exact"):
        capacity.add_column(col, justify="left" if col in ("cluster", "resource") else "right")
    sums: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
    newest = {m.manifest_id: m for m in sorted(manifests, key=lambda m: m.revision)}
    for m in newest.values():
        for c in m.capacity:
            row = sums[(m.cluster, c.resource, c.unit)]
            for i, v in enumerate((c.allocatable_quantity, c.charged_quantity,
                                   c.idle_quantity, c.overcommit_quantity)):
                row[i] += v
    ok = True
    for (cluster, resource, unit), (offered, charged, idle, over) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], resource_order(kv[0][1]))):
        exact = charged + idle - over == offered
        ok &= exact
        capacity.add_row(cluster, f"{resource} ({unit})",
                         *(format(v, "f") for v in (offered, charged, idle, over)),
                         "[green]yes[/green]" if exact else "[red]NO[/red]")
    console.print(capacity)
    return ok


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="simulator + local broker: export a few periods and show them")
    p.add_argument("--periods", type=int, default=None,
                   help="closed hours to export (default 3, 2 in the minute after an hour)")
    p.add_argument("--seed", type=int, default=1, help="fleet seed")
    p.add_argument("--distribute-idle", choices=("proportional", "even"), default=None,
                   help="the rate card distributes idle capacity to cost centers (default: "
                        "idle stays on its __idle__ rows)")
    p.set_defaults(handler=cmd_demo)

"""`chargeback-exporter tail`: what a read_committed consumer of the topics sees, decoded."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from exporter.clock import Clock
from exporter.commands import add_common, config_from_args
from exporter.consumer import latest_records, read_manifests, read_records, to_json
from exporter.errors import ConfigError
from exporter.periods import iso, parse_time
from exporter.records import BillingRecord, PeriodManifest
from exporter.wiring import build_codec


def _in_window(r: Any, start: int | None, end: int | None) -> bool:
    if start is not None and r.period_start < start * 1000:
        return False
    return not (end is not None and r.period_end > end * 1000)


def record_table(records: Iterable[BillingRecord]) -> Table:
    t = Table(title="Billing records (read_committed)")
    for col in ("period start", "cluster", "namespace", "workload", "resource", "costcenter",
                "usage", "request", "chargeable", "unit", "cost", "rev"):
        t.add_column(col, justify="right" if col in ("usage", "request", "chargeable", "cost", "rev")
                     else "left")
    for r in records:
        t.add_row(iso(r.period_start // 1000), r.cluster, r.namespace,
                  f"{r.workload_kind}/{r.workload_name}", r.resource, r.costcenter,
                  str(r.usage_quantity), str(r.request_quantity), str(r.chargeable_quantity),
                  r.unit, "" if r.cost is None else f"{r.cost} {r.currency}", str(r.revision))
    return t


def manifest_table(manifests: Iterable[PeriodManifest]) -> Table:
    t = Table(title="Period manifests (read_committed)")
    for col in ("period start", "cluster", "records", "status", "coverage", "method", "rev"):
        t.add_column(col, justify="right" if col in ("records", "coverage", "rev") else "left")
    for m in manifests:
        t.add_row(iso(m.period_start // 1000), m.cluster, str(m.record_count), m.status,
                  str(m.sample_coverage), m.method, str(m.revision))
    return t


def latest_manifests(manifests: Iterable[PeriodManifest]) -> list[PeriodManifest]:
    """Upsert by `manifest_id`, keeping the highest revision (ties: the later one), in period
    and cluster order."""
    out: dict[str, PeriodManifest] = {}
    for m in manifests:
        cur = out.get(m.manifest_id)
        if cur is None or m.revision >= cur.revision:
            out[m.manifest_id] = m
    return sorted(out.values(), key=lambda m: (m.period_start, m.cluster))


def cmd_tail(args: argparse.Namespace, *, clock: Clock) -> int:
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"tail: --from {iso(start)} is not before --to {iso(end)}")
    cfg = config_from_args(args)
    codec = build_codec(cfg)
    out = sys.stdout
    if args.topic == "manifests":
        manifests: Iterable[PeriodManifest] = (
            m for m in read_manifests(cfg.kafka, codec) if _in_window(m, start, end))
        if args.latest:
            manifests = latest_manifests(manifests)
        if args.format == "table":
            shown = list(manifests)
            Console(file=out, width=220).print(manifest_table(shown))
            out.write(f"{len(shown)} manifests; {sum(m.record_count for m in shown)} records\n")
            return 0
        for m in manifests:
            out.write(to_json(m) + "\n")
        return 0
    records: Iterable[BillingRecord] = (
        r for r in read_records(cfg.kafka, codec) if _in_window(r, start, end))
    if args.latest:
        records = sorted(latest_records(records).values(),
                         key=lambda r: (r.period_start, r.cluster, r.namespace, r.workload_name,
                                        r.resource))
    if args.format == "table":
        rows = list(records)
        Console(file=out, width=220).print(record_table(rows))
        total = {res: sum((r.chargeable_quantity for r in rows if r.resource == res), Decimal(0))
                 for res in ("cpu", "memory")}
        out.write(f"{len(rows)} records; chargeable {total['cpu']} Core-Hours, "
                  f"{total['memory']} GiB-Hours\n")
        return 0
    for r in records:
        out.write(to_json(r) + "\n")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("tail", help="print the committed billing records or manifests, decoded")
    add_common(p)
    p.add_argument("--topic", choices=("records", "manifests"), default="records")
    p.add_argument("--format", choices=("jsonl", "table"), default="jsonl")
    p.add_argument("--latest", action="store_true",
                   help="only the highest revision per record_id or manifest_id (what an "
                        "upserting consumer keeps)")
    p.add_argument("--from", dest="start", help="only periods starting at or after (RFC 3339)")
    p.add_argument("--to", dest="end", help="only periods ending at or before (RFC 3339)")
    p.set_defaults(handler=cmd_tail)

"""`chargeback-exporter export focus`: a FinOps FOCUS cost-and-usage CSV from the Kafka records.

The export is what an upserting billing consumer holds: committed records only
(`read_committed`), the highest `revision` per `record_id`, restricted to periods inside
`[--from, --to)`. Each record becomes one FOCUS row (docs/focus.md has the column mapping and
the choices made where FOCUS leaves room). The file is written to a temporary file beside the
target and renamed over it, so a failed export never leaves a partial file behind.

Public API: `COLUMNS`, `focus_row`, `select_records`, `render_csv`, `write_atomic`,
`export_focus`, `register`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from exporter.commands import add_common, build_codec, config_from_args
from exporter.config import Config
from exporter.consumer import latest_records
from exporter.errors import ConfigError, EncodingError, ExporterError
from exporter.kafka_sink import read_topic
from exporter.periods import iso, parse_time
from exporter.records import BillingRecord

UNPRICED_CURRENCY = "XXX"
"""ISO 4217 "no currency involved": the BillingCurrency of unpriced rows (`--allow-unpriced`)."""

CHARGEABLE_ALLOCATIONS: tuple[str, ...] = ("direct", "shared-distribution")
"""Allocations that are charges. `shared-source` records (the audit trail of a shared pool,
already charged through its `shared-distribution` shares) and unknown values are left out,
as the schema tells consumers to do, so that no cost is counted twice."""

ORG_KEYS: tuple[str, ...] = ("costcenter", "businessunit", "department", "team")

COLUMNS: tuple[str, ...] = (
    "BillingAccountId", "BillingAccountName",
    "BillingPeriodStart", "BillingPeriodEnd",
    "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "ChargeClass", "ChargeFrequency", "ChargeDescription",
    "ConsumedQuantity", "ConsumedUnit",
    "PricingQuantity", "PricingUnit",
    "ListUnitPrice", "ListCost",
    "ContractedUnitPrice", "ContractedCost",
    "BilledCost", "EffectiveCost",
    "BillingCurrency", "PricingCurrency",
    "ProviderName", "PublisherName", "InvoiceIssuerName",
    "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceSubcategory", "ServiceName",
    "SubAccountId", "SubAccountName",
    "Tags",
    "AllocatedMethodId", "AllocatedMethodDetails",
    "x_RecordId", "x_Revision", "x_Cluster", "x_Namespace", "x_Resource", "x_Allocation",
    "x_UsageQuantity", "x_RequestQuantity", "x_SampleCoverage", "x_PriceVersion",
    "x_OrgLabelSources", "x_InvalidOrgValues",
)
"""The CSV header, in order. FOCUS 1.2 Cost and Usage columns plus the 1.3 allocation columns;
custom columns carry the `x_` prefix."""

_RESOURCE_NAMES: Mapping[str, str] = {"cpu": "CPU", "memory": "Memory"}
_PRICE_SCALE = Decimal("1E-10")  # the schema's unit_price scale


def fmt_decimal(value: Decimal) -> str:
    """Plain decimal text as carried: no exponent, no grouping (`Decimal('0E-9')` -> `0.000000000`)."""
    return format(value, "f")


def fmt_time(epoch_ms: int, what: str) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`; `what` names the value in the error for a sub-second time."""
    if epoch_ms % 1000:
        raise ExporterError(f"{what}: {epoch_ms} ms is not a whole second (FOCUS dates have none)")
    return datetime.fromtimestamp(epoch_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def billing_month(period_start_ms: int, period_end_ms: int, what: str) -> tuple[int, int]:
    """The UTC calendar month `[start, end)` (epoch ms) that contains the charge period.

    Raises `ExporterError` when the period crosses a month boundary (configured period lengths
    divide a day, so only a foreign producer can cause it).
    """
    t = datetime.fromtimestamp(period_start_ms // 1000, tz=UTC)
    start = datetime(t.year, t.month, 1, tzinfo=UTC)
    end = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    start_ms, end_ms = int(start.timestamp()) * 1000, int(end.timestamp()) * 1000
    if period_end_ms > end_ms:
        raise ExporterError(f"{what}: the charge period crosses the end of the billing month "
                            f"{start:%Y-%m}")
    return start_ms, end_ms


def _json(mapping: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(mapping.items())), separators=(",", ":"), ensure_ascii=False)


def tags(record: BillingRecord) -> dict[str, str]:
    """FOCUS Tags: the four org keys (with `__unallocated__`/`__invalid__` as carried) over the
    record's other labels; an org key wins over a label of the same name."""
    out = dict(record.labels)
    for key in ORG_KEYS:
        out[key] = getattr(record, key)
    return out


def _where(r: BillingRecord) -> str:
    return (f"record {r.record_id} ({r.cluster}/{r.namespace}/{r.workload_kind}/"
            f"{r.workload_name} {r.resource})")


def _description(r: BillingRecord, priced: bool) -> str:
    res = _RESOURCE_NAMES.get(r.resource, r.resource)
    who = f"{r.workload_kind} {r.namespace}/{r.workload_name} in cluster {r.cluster}"
    if r.allocation == "shared-distribution":
        text = f"{res} share of a shared workload pool charged to {who}"
    else:
        text = f"{res} of {who}, max(request, usage)"
    return text if priced else f"{text} (unpriced)"


def _prices(r: BillingRecord, allow_unpriced: bool) -> tuple[Decimal, Decimal, str, bool]:
    """(unit price, cost, currency, priced) for the row, following docs/focus.md."""
    if r.cost is None:
        if not allow_unpriced:
            raise ExporterError(f"{_where(r)}: no price")  # caught and summarised by the caller
        return Decimal(0), Decimal(0), UNPRICED_CURRENCY, False
    if r.currency is None:
        raise ExporterError(f"{_where(r)}: has a cost but no currency")
    price = r.unit_price
    if price is None:
        # A shared-distribution share is a slice of a pool's cost, not quantity x price; FOCUS
        # still wants a Usage row's ListUnitPrice, so give the implied rate at the price scale.
        price = (r.cost / r.chargeable_quantity).quantize(_PRICE_SCALE) if r.chargeable_quantity \
            else Decimal(0).quantize(_PRICE_SCALE)
    return price, r.cost, r.currency, True


def focus_row(r: BillingRecord, *, allow_unpriced: bool = False,
              provider: str = "Kubernetes") -> dict[str, str]:
    """The FOCUS row of one billing record, every value as CSV text ('' is null).

    Raises `ExporterError` naming the record for an unpriced record unless `allow_unpriced`
    (then costs and prices are 0 in currency `XXX`), for a sub-second period bound and for a
    period crossing a month boundary.
    """
    where = _where(r)
    price, cost, currency, priced = _prices(r, allow_unpriced)
    bp_start, bp_end = billing_month(r.period_start, r.period_end, where)
    resource_id = f"{r.cluster}/{r.namespace}/{r.workload_kind}/{r.workload_name}"
    details = ""
    if r.allocation == "direct":
        # The whole chargeable quantity is the workload's own: one element, ratio 1.
        details = ('{"Elements":[{"AllocatedRatio":1,"UsageUnit":' + json.dumps(r.unit)
                   + ',"UsageQuantity":' + fmt_decimal(r.chargeable_quantity) + "}]}")
    return {
        "BillingAccountId": r.costcenter,
        "BillingAccountName": r.costcenter,
        "BillingPeriodStart": fmt_time(bp_start, where),
        "BillingPeriodEnd": fmt_time(bp_end, where),
        "ChargePeriodStart": fmt_time(r.period_start, where),
        "ChargePeriodEnd": fmt_time(r.period_end, where),
        "ChargeCategory": "Usage",
        "ChargeClass": "Correction" if r.revision > 0 else "",
        "ChargeFrequency": "Usage-Based",
        "ChargeDescription": _description(r, priced),
        "ConsumedQuantity": fmt_decimal(r.usage_quantity),
        "ConsumedUnit": r.unit,
        "PricingQuantity": fmt_decimal(r.chargeable_quantity),
        "PricingUnit": r.unit,
        "ListUnitPrice": fmt_decimal(price),
        "ListCost": fmt_decimal(cost),
        "ContractedUnitPrice": fmt_decimal(price),
        "ContractedCost": fmt_decimal(cost),
        "BilledCost": fmt_decimal(cost),
        "EffectiveCost": fmt_decimal(cost),
        "BillingCurrency": currency,
        "PricingCurrency": currency,
        "ProviderName": provider,
        "PublisherName": provider,
        "InvoiceIssuerName": provider,
        "ResourceId": resource_id,
        "ResourceName": r.workload_name,
        "ResourceType": r.workload_kind,
        "ServiceCategory": "Compute",
        "ServiceSubcategory": "Containers",
        "ServiceName": "Kubernetes",
        "SubAccountId": r.namespace,
        "SubAccountName": r.namespace,
        "Tags": _json(tags(r)),
        "AllocatedMethodId": r.method,
        "AllocatedMethodDetails": details,
        "x_RecordId": r.record_id,
        "x_Revision": str(r.revision),
        "x_Cluster": r.cluster,
        "x_Namespace": r.namespace,
        "x_Resource": r.resource,
        "x_Allocation": r.allocation,
        "x_UsageQuantity": fmt_decimal(r.usage_quantity),
        "x_RequestQuantity": fmt_decimal(r.request_quantity),
        "x_SampleCoverage": fmt_decimal(r.sample_coverage),
        "x_PriceVersion": r.price_version or "",
        "x_OrgLabelSources": _json(r.org_label_sources),
        "x_InvalidOrgValues": _json(r.invalid_org_values),
    }


def _order(r: BillingRecord) -> tuple[Any, ...]:
    return (r.period_start, r.cluster, r.namespace, r.workload_kind, r.workload_name,
            r.resource, r.allocation, r.record_id)


@dataclass(slots=True)
class Selection:
    """The records to export and what was left out."""

    records: list[BillingRecord]
    skipped_allocations: dict[str, int] = field(default_factory=dict)


def select_records(records: Iterable[BillingRecord], start: int, end: int) -> Selection:
    """Latest revision per `record_id`, periods inside `[start, end)` (epoch seconds), chargeable
    allocations only; sorted by period, cluster, namespace, workload, resource."""
    chosen: list[BillingRecord] = []
    skipped: dict[str, int] = {}
    for r in latest_records(records).values():
        if r.period_start < start * 1000 or r.period_end > end * 1000:
            continue
        if r.allocation not in CHARGEABLE_ALLOCATIONS:
            skipped[r.allocation] = skipped.get(r.allocation, 0) + 1
            continue
        chosen.append(r)
    return Selection(sorted(chosen, key=_order), skipped)


def render_csv(rows: Iterable[Mapping[str, str]]) -> str:
    """RFC 4180 CSV: the `COLUMNS` header, CRLF line ends, quotes only where needed."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n",
                            quoting=csv.QUOTE_MINIMAL, extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def check_output(path: Path) -> None:
    """Fail early, before reading Kafka, when `path` cannot be the output file."""
    if path.is_dir():
        raise ConfigError(f"--output {path}: is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--output {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {path}: directory {parent} is not writable")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` as UTF-8 to `path` through a temporary file in the same directory and a
    rename, so readers see the old file or the whole new one, never a partial one. The new file
    gets the usual mode (0666 minus the umask). Raises `ExporterError` (one line) on failure.
    """
    parent = path.parent if str(path.parent) else Path(".")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ExporterError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def _quiet_librdkafka() -> Iterator[None]:
    """Hold back librdkafka's per-attempt connection logs unless DEBUG is on: a one-shot read
    ends in one error line that already says what failed."""
    logger = logging.getLogger("exporter.librdkafka")
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read(cfg: Config, codec: Any) -> Iterator[BillingRecord]:
    topic = cfg.kafka.topics.records
    # The connect timeout bounds every broker wait, so an unreachable broker fails in time.
    for m in read_topic(cfg.kafka, topic, timeout=float(cfg.kafka.connect_timeout)):
        if m.value is None:
            continue
        try:
            yield codec.decode_record(m.value)
        except EncodingError as exc:
            raise EncodingError(f"Kafka {topic} partition {m.partition} offset {m.offset}: {exc}") from None


@dataclass(slots=True)
class ExportSummary:
    """What `export_focus` wrote."""

    rows: int
    corrections: int
    unpriced: int
    billed: dict[str, Decimal]
    quantities: dict[str, Decimal]
    skipped_allocations: dict[str, int]


def export_focus(cfg: Config, start: int, end: int, output: Path, *, allow_unpriced: bool = False,
                 provider: str = "Kubernetes", records: Iterable[BillingRecord] | None = None,
                 ) -> ExportSummary:
    """Write the FOCUS CSV of the committed records with periods in `[start, end)` to `output`.

    `records` replaces the Kafka read (the records as consumed, all revisions). Raises
    `ConfigError` for an empty window or an unusable output path, `ExporterError` when records
    are unpriced and `allow_unpriced` is false, and the sink errors for the broker; in every
    failure `output` is left as it was.
    """
    if end <= start:
        raise ConfigError(f"empty window: --to {iso(end)} is not after --from {iso(start)}")
    check_output(output)
    if records is not None:
        sel = select_records(records, start, end)
    else:
        with _quiet_librdkafka():
            sel = select_records(_read(cfg, build_codec(cfg)), start, end)
    unpriced = [r for r in sel.records if r.cost is None]
    if unpriced and not allow_unpriced:
        raise ExporterError(
            f"{len(unpriced)} of {len(sel.records)} records have no price (first: "
            f"{_where(unpriced[0])}); they were computed without a rate card "
            "(pricing.rate_card_file). Pass --allow-unpriced to write them at cost 0 in currency XXX"
        )
    rows = [focus_row(r, allow_unpriced=allow_unpriced, provider=provider) for r in sel.records]
    write_atomic(output, render_csv(rows))
    billed: dict[str, Decimal] = {}
    quantities: dict[str, Decimal] = {}
    for row in rows:
        cur = row["BillingCurrency"]
        billed[cur] = billed.get(cur, Decimal(0)) + Decimal(row["BilledCost"])
        unit = row["PricingUnit"]
        quantities[unit] = quantities.get(unit, Decimal(0)) + Decimal(row["PricingQuantity"])
    return ExportSummary(len(rows), sum(1 for r in sel.records if r.revision > 0), len(unpriced),
                         billed, quantities, sel.skipped_allocations)


def _time_arg(text: str, flag: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def cmd_export_focus(args: argparse.Namespace) -> int:
    start = _time_arg(args.start, "--from")
    end = _time_arg(args.end, "--to")
    cfg = config_from_args(args)
    summary = export_focus(cfg, start, end, Path(args.output), allow_unpriced=args.allow_unpriced,
                           provider=args.provider_name)
    parts = [f"wrote {summary.rows} rows to {args.output}",
             f"{summary.corrections} corrections", f"{summary.unpriced} unpriced"]
    parts += [f"BilledCost {fmt_decimal(v)} {k}" for k, v in sorted(summary.billed.items())]
    parts += [f"{fmt_decimal(v)} {k}" for k, v in sorted(summary.quantities.items())]
    parts += [f"left out {n} {a} records" for a, n in sorted(summary.skipped_allocations.items())]
    sys.stdout.write("export focus: " + "; ".join(parts) + "\n")
    return 0


def register(sub: Any) -> None:
    """Add `export` with its `focus` subcommand to the CLI's subparsers."""
    export = sub.add_parser("export", help="export the committed billing records to a file format")
    formats = export.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p: argparse.ArgumentParser = formats.add_parser(
        "focus", help="FinOps FOCUS cost-and-usage CSV (latest revision per record)")
    add_common(p)
    p.add_argument("--from", dest="start", required=True,
                   help="window start, RFC 3339 (inclusive; periods starting at or after it)")
    p.add_argument("--to", dest="end", required=True,
                   help="window end, RFC 3339 (exclusive; periods ending at or before it)")
    p.add_argument("--output", required=True, help="CSV file to write (replaced atomically)")
    p.add_argument("--billing-period", choices=("month",), default="month",
                   help="FOCUS billing period: the UTC calendar month containing the charge period")
    p.add_argument("--allow-unpriced", action="store_true",
                   help="write records without a price at cost 0 in currency XXX instead of failing")
    p.add_argument("--provider-name", default="Kubernetes",
                   help="ProviderName, PublisherName and InvoiceIssuerName (default: Kubernetes)")
    p.set_defaults(handler=cmd_export_focus)


__all__: Sequence[str] = (
    "COLUMNS", "UNPRICED_CURRENCY", "ExportSummary", "Selection", "export_focus", "focus_row",
    "register", "render_csv", "select_records", "write_atomic",
)

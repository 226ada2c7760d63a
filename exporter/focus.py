"""`chargeback-exporter export focus`: a FinOps FOCUS cost-and-usage CSV from the Kafka records.

The export reads committed records only (`read_committed`), with the `published_at` header
of each, restricted to periods inside `[--from, --to)`. A record gives one FOCUS row for what
its billing period holds when it closes: the highest revision published before then (a revision
inside the open billing period replaces the row). Each later billing period in which the record
was revised adds a `Correction` row with the difference (docs/focus.md has the column mapping and
the choices made where FOCUS leaves room). The file is written to a temporary file beside the
target and renamed over it, so a failed export never leaves a partial file behind.

Public API: `COLUMNS`, `Published`, `Charge`, `billing_period`, `select_records`, `focus_row`,
`focus_rows`, `render_csv`, `write_atomic`, `export_focus`, `register`.
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
from typing import Any, cast

from exporter.clock import Clock
from exporter.commands import add_common, config_from_args
from exporter.config import Config
from exporter.errors import ConfigError, EncodingError, ExporterError
from exporter.kafka import read_topic
from exporter.model import GPU, STORAGE, family
from exporter.money import CONTEXT, DecimalSpec, largest_remainder, quantize
from exporter.periods import iso, parse_time
from exporter.records import PUBLISHED_AT_HEADER, BillingRecord
from exporter.shared_costs import DIRECT, SHARED_DISTRIBUTION, SHARED_FROM_LABEL
from exporter.wiring import build_codec

UNPRICED_CURRENCY = "XXX"
"""ISO 4217 "no currency involved": the BillingCurrency of unpriced rows (`--allow-unpriced`)."""

CHARGEABLE_ALLOCATIONS: tuple[str, ...] = ("direct", "shared-distribution", "idle",
                                           "idle-distribution")
"""Allocations that are charges: the workloads', shared-cost and idle shares, and idle capacity
that was not distributed (its own `__idle__` rows). `shared-source` and `idle-source` records
(the audit trail of a pool already charged through its shares) and unknown values are left out,
as the schema tells consumers to do, so that no cost is counted twice."""
_SPLITS = frozenset({SHARED_DISTRIBUTION, "idle-distribution"})

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
    "x_RecordId", "x_Revision", "x_CorrectedRevision", "x_Method",
    "x_Cluster", "x_Namespace", "x_Resource", "x_Allocation",
    "x_UsageQuantity", "x_RequestQuantity", "x_SampleCoverage", "x_PriceVersion",
    "x_OrgLabelSources", "x_InvalidOrgValues", "x_GpuProfile", "x_StorageClass",
)
"""The CSV header, in order. FOCUS 1.2 Cost and Usage columns plus the 1.3 allocation columns;
custom columns carry the `x_` prefix."""

INVOICING_PERIODS: Mapping[str, int] = {"month": 1, "quarter": 3}
"""`billing.invoicing_period` values and their length in calendar months."""

RATIO_SCALE = 12
"""Decimals of AllocatedRatio: the ratios of one shared pool are split exactly at this scale."""

_RESOURCE_NAMES: Mapping[str, str] = {"cpu": "CPU", "memory": "Memory"}
# Charged by allocation (docs/queries.md): what was consumed is what was held, the request.
_ALLOCATED = frozenset({GPU, STORAGE})
# The schema's unit_price scale; wider than its precision, as the implied rate of a tiny
# quantity can exceed it.
_PRICE = DecimalSpec(38, 10)
_NO_PRICE = Decimal(0).scaleb(-_PRICE.scale)


def fmt_decimal(value: Decimal) -> str:
    """Plain decimal text as carried: no exponent, no grouping (`Decimal('0E-9')` -> `0.000000000`)."""
    return format(value, "f")


def fmt_time(epoch_ms: int, what: str) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`; `what` names the value in the error for a sub-second time."""
    if epoch_ms % 1000:
        raise ExporterError(f"{what}: {epoch_ms} ms is not a whole second (FOCUS dates have none)")
    return datetime.fromtimestamp(epoch_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def billing_period(epoch_ms: int, invoicing_period: str = "month") -> tuple[int, int]:
    """The UTC calendar billing period `[start, end)` (epoch ms) that contains `epoch_ms`: its
    month, or its quarter (January, April, July, October)."""
    months = INVOICING_PERIODS[invoicing_period]
    t = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    first = (t.month - 1) // months * months  # months since January at the period's start
    start = datetime(t.year, first + 1, 1, tzinfo=UTC)
    end = datetime(t.year + (first + months) // 12, (first + months) % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


def charge_billing_period(r: BillingRecord, invoicing_period: str) -> tuple[int, int]:
    """The billing period that contains the record's charge period.

    Raises `ExporterError` when the charge period crosses its end (configured period lengths
    divide a day, so only a foreign producer can cause it).
    """
    start, end = billing_period(r.period_start, invoicing_period)
    if r.period_end > end:
        raise ExporterError(f"{_where(r)}: the charge period crosses the end of the billing period "
                            f"{datetime.fromtimestamp(start // 1000, tz=UTC):%Y-%m}")
    return start, end


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


@dataclass(frozen=True, slots=True)
class Published:
    """A record as read from Kafka, with its `published_at` header (epoch ms)."""

    record: BillingRecord
    published_at: int


@dataclass(frozen=True, slots=True)
class Charge:
    """One FOCUS row: `record` as its billing period holds it, or, for a correction, the
    difference between `record` and `previous` (None: the record had no row before)."""

    record: BillingRecord
    billing_period: tuple[int, int]
    correction: bool = False
    previous: BillingRecord | None = None

    @property
    def priced(self) -> bool:
        """Whether the row has a cost: the record's, or the priced one it corrects."""
        if self.record.cost is not None:
            return True
        return self.correction and self.previous is not None and self.previous.cost is not None


def resource_name(resource: str) -> str:
    """How a description names a resource: `CPU`, `Memory`, `GPU`, `GPU slice mig-1g.5gb`,
    `storage class standard`."""
    name = _RESOURCE_NAMES.get(resource)
    if name is not None:
        return name
    kind, _, detail = resource.partition(".")
    if kind == GPU:
        return f"GPU slice {detail}" if detail else "GPU"
    return f"{kind} class {detail}" if kind == STORAGE else resource


def _rule(resource: str) -> str:
    """What the quantity of a direct charge is (docs/queries.md)."""
    kind = family(resource)
    if kind == GPU:
        return "requested while its pods run"
    if kind == STORAGE:
        return "requested capacity while the claim exists"
    return "max(request, usage)"


def _description(c: Charge) -> str:
    r = c.record
    res = resource_name(r.resource)
    who = f"{r.workload_kind} {r.namespace}/{r.workload_name} in cluster {r.cluster}"
    if r.allocation == SHARED_DISTRIBUTION:
        text = f"{res} share of a shared workload pool charged to {who}"
    elif r.allocation == "idle":
        text = f"idle {res} capacity of cluster {r.cluster}: node allocatable less the charges"
    elif r.allocation == "idle-distribution":
        text = (f"{res} share of the idle capacity of cluster {r.cluster} charged to cost "
                f"center {r.costcenter}")
    else:
        text = f"{res} of {who}, {_rule(r.resource)}"
    if c.correction:
        was = f"revision {c.previous.revision}" if c.previous is not None else "no earlier row"
        text = f"Correction to revision {r.revision} (from {was}): {text}"
    return text if c.priced else f"{text} (unpriced)"


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
        price = quantize(CONTEXT.divide(r.cost, r.chargeable_quantity), _PRICE,
                         lambda: f"{_where(r)}: implied unit price") if r.chargeable_quantity \
            else _NO_PRICE
    return price, r.cost, r.currency, True


def _money(c: Charge, allow_unpriced: bool) -> tuple[str, Decimal, str]:
    """(unit price text, '' for null; cost; currency) of the row. A correction's cost is the
    difference, in the one currency of both revisions (an unpriced side counts as 0)."""
    r, prev = c.record, c.previous
    if not c.correction:
        price, cost, currency, _ = _prices(r, allow_unpriced)
        return fmt_decimal(price), cost, currency
    before = prev.cost if prev is not None and prev.cost is not None else None
    if before is not None and r.cost is not None and prev is not None and prev.currency != r.currency:
        raise ExporterError(f"{_where(r)}: revision {r.revision} changes the currency from "
                            f"{prev.currency} to {r.currency}; a correction cannot mix currencies")
    if r.cost is None and before is not None and prev is not None:
        # Priced before, unpriced now: the correction takes the cost back; there is no new price.
        return "", Decimal(0) - before, cast(str, prev.currency)
    price, cost, currency, _ = _prices(r, allow_unpriced or before is not None)
    return fmt_decimal(price), cost - (before if before is not None else Decimal(0)), currency


def _delta(c: Charge, field_name: str) -> Decimal:
    new: Decimal = getattr(c.record, field_name)
    if not c.correction:
        return new
    return new - (getattr(c.previous, field_name) if c.previous is not None else Decimal(0))


def focus_row(c: Charge | BillingRecord, *, allow_unpriced: bool = False,
              provider: str = "Kubernetes", details: str = "",
              invoicing_period: str = "month") -> dict[str, str]:
    """The FOCUS row of one charge (a bare record: its row in its own billing period), every
    value as CSV text ('' is null). `details` is the AllocatedMethodDetails of a
    shared-distribution row (`allocation_details`).

    Raises `ExporterError` naming the record for an unpriced record unless `allow_unpriced`
    (then costs and prices are 0 in currency `XXX`), for a sub-second period bound, for a
    period crossing the end of its billing period and for a correction changing the currency.
    """
    if isinstance(c, BillingRecord):
        c = Charge(c, charge_billing_period(c, invoicing_period))
    r = c.record
    where = _where(r)
    price, cost, currency = _money(c, allow_unpriced)
    bp_start, bp_end = c.billing_period
    resource_id = f"{r.cluster}/{r.namespace}/{r.workload_kind}/{r.workload_name}"
    allocated = r.allocation in _SPLITS
    kind = family(r.resource)
    usage = fmt_decimal(_delta(c, "usage_quantity"))
    consumed = fmt_decimal(_delta(c, "request_quantity")) if kind in _ALLOCATED else usage
    profile = r.resource.partition(".")[2]
    return {
        "BillingAccountId": r.costcenter,
        "BillingAccountName": r.costcenter,
        "BillingPeriodStart": fmt_time(bp_start, where),
        "BillingPeriodEnd": fmt_time(bp_end, where),
        "ChargePeriodStart": fmt_time(r.period_start, where),
        "ChargePeriodEnd": fmt_time(r.period_end, where),
        "ChargeCategory": "Usage",
        "ChargeClass": "Correction" if c.correction else "",
        "ChargeFrequency": "Usage-Based",
        "ChargeDescription": _description(c),
        "ConsumedQuantity": consumed,
        "ConsumedUnit": r.unit,
        "PricingQuantity": fmt_decimal(_delta(c, "chargeable_quantity")),
        "PricingUnit": r.unit,
        "ListUnitPrice": price,
        "ListCost": fmt_decimal(cost),
        "ContractedUnitPrice": price,
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
        "ServiceCategory": "Storage" if kind == STORAGE else "Compute",
        # A storage class says nothing of block or file storage.
        "ServiceSubcategory": "Other (Storage)" if kind == STORAGE else "Containers",
        "ServiceName": "Kubernetes",
        "SubAccountId": r.namespace,
        "SubAccountName": r.namespace,
        "Tags": _json(tags(r)),
        # FOCUS 1.3: only a charge produced by a split cost allocation names its method.
        "AllocatedMethodId": r.method if allocated else "",
        "AllocatedMethodDetails": details if allocated else "",
        "x_RecordId": r.record_id,
        "x_Revision": str(r.revision),
        "x_CorrectedRevision": str(c.previous.revision) if c.previous is not None else "",
        "x_Method": r.method,
        "x_Cluster": r.cluster,
        "x_Namespace": r.namespace,
        "x_Resource": r.resource,
        "x_Allocation": r.allocation,
        "x_UsageQuantity": usage,
        "x_RequestQuantity": fmt_decimal(_delta(c, "request_quantity")),
        "x_SampleCoverage": fmt_decimal(r.sample_coverage),
        "x_PriceVersion": r.price_version or "",
        "x_OrgLabelSources": _json(r.org_label_sources),
        "x_InvalidOrgValues": _json(r.invalid_org_values),
        "x_GpuProfile": profile if kind == GPU else "",
        "x_StorageClass": profile if kind == STORAGE else "",
    }


def allocation_details(versions: Iterable[BillingRecord]) -> dict[tuple[str, int], str]:
    """AllocatedMethodDetails per (record_id, revision) of every shared-distribution record.

    The origin charge is one shared pool: a (period, cluster, resource) at one revision (a
    period-cluster is always republished whole). Each share's AllocatedRatio is its part of the
    pool, in proportion to the recipient's own chargeable quantity (its `direct` record, the
    weight exporter/shared_costs.py splits by; the share's quantity when that record is absent), split
    with `largest_remainder` at `RATIO_SCALE` so that the ratios of one pool sum to exactly 1.
    """
    pools: dict[tuple[Any, ...], list[BillingRecord]] = {}
    basis: dict[tuple[Any, ...], Decimal] = {}
    for r in versions:
        who = (r.period_start, r.period_end, r.cluster, r.resource, r.revision)
        if r.allocation in _SPLITS:
            pools.setdefault((*who, r.allocation), []).append(r)
        elif r.allocation == DIRECT:
            basis[(*who, r.namespace, r.workload_kind, r.workload_name)] = r.chargeable_quantity
    out: dict[tuple[str, int], str] = {}
    for (*who_, _), shares in pools.items():
        who = tuple(who_)
        shares.sort(key=_order)
        weights = [basis.get((*who, r.namespace, r.workload_kind, r.workload_name),
                             r.chargeable_quantity) for r in shares]
        positive = [i for i, w in enumerate(weights) if w > 0]
        ratios = dict.fromkeys(range(len(shares)), Decimal(0).scaleb(-RATIO_SCALE))
        if positive:
            split = largest_remainder(Decimal(1), [weights[i] for i in positive], RATIO_SCALE)
            ratios.update(zip(positive, split, strict=True))
        for i, r in enumerate(shares):
            element = (f'{{"AllocatedRatio":{fmt_decimal(ratios[i])},"UsageUnit":'
                       f'{json.dumps(r.unit)},"UsageQuantity":{fmt_decimal(weights[i])}}}')
            shared_from = json.dumps(r.labels.get(SHARED_FROM_LABEL, ""), ensure_ascii=False)
            out[(r.record_id, r.revision)] = (f'{{"Elements":[{element}],'
                                              f'"x_SharedFrom":{shared_from}}}')
    return out


def _order(r: BillingRecord) -> tuple[Any, ...]:
    return (r.period_start, r.cluster, r.namespace, r.workload_kind, r.workload_name,
            r.resource, r.allocation, r.record_id)


def _charge_order(c: Charge) -> tuple[Any, ...]:
    return (*_order(c.record), c.billing_period)


@dataclass(slots=True)
class Selection:
    """The rows to export, every revision of their records, and what was left out."""

    charges: list[Charge]
    versions: list[BillingRecord] = field(default_factory=list)
    skipped_allocations: dict[str, int] = field(default_factory=dict)


def _charges(revisions: Sequence[Published], invoicing_period: str) -> list[Charge]:
    """The rows of one record from its revisions in ascending order (module docstring)."""
    period = charge_billing_period(revisions[0].record, invoicing_period)
    base: BillingRecord | None = None
    later: dict[tuple[int, int], BillingRecord] = {}
    for p in revisions:
        if p.record.revision == 0 or p.published_at < period[1]:
            base = p.record  # the billing period is still open: the revision replaces the row
        else:
            later[billing_period(p.published_at, invoicing_period)] = p.record
    out = [Charge(base, period)] if base is not None else []
    previous = base
    for bp in sorted(later):
        out.append(Charge(later[bp], bp, correction=True, previous=previous))
        previous = later[bp]
    return out


def select_records(records: Iterable[Published], start: int, end: int,
                   invoicing_period: str = "month") -> Selection:
    """The rows of the records whose periods lie inside `[start, end)` (epoch seconds),
    chargeable allocations only, sorted by period, cluster, namespace, workload, resource.

    Revisions are upserted per (`record_id`, `revision`), the later message winning. Revision 0
    and any revision published before the end of the record's billing period make its row (the
    highest wins); later revisions make one `Correction` row per billing period they were
    published in, each the difference to the row before it.
    """
    by_id: dict[str, dict[int, Published]] = {}
    for p in records:
        by_id.setdefault(p.record.record_id, {})[p.record.revision] = p
    charges: list[Charge] = []
    versions: list[BillingRecord] = []
    skipped: dict[str, int] = {}
    for revs in by_id.values():
        ordered = [revs[k] for k in sorted(revs)]
        r = ordered[-1].record
        if r.period_start < start * 1000 or r.period_end > end * 1000:
            continue
        if r.allocation not in CHARGEABLE_ALLOCATIONS:
            skipped[r.allocation] = skipped.get(r.allocation, 0) + 1
            continue
        versions.extend(p.record for p in ordered)
        charges.extend(_charges(ordered, invoicing_period))
    return Selection(sorted(charges, key=_charge_order), versions, skipped)


def focus_rows(sel: Selection, *, allow_unpriced: bool = False,
               provider: str = "Kubernetes") -> list[dict[str, str]]:
    """The FOCUS rows of a selection, in its order (`focus_row`)."""
    details = allocation_details(sel.versions)
    return [focus_row(c, allow_unpriced=allow_unpriced, provider=provider,
                      details=details.get((c.record.record_id, c.record.revision), ""))
            for c in sel.charges]


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


def _read(cfg: Config, codec: Any) -> Iterator[Published]:
    topic = cfg.kafka.topics.records
    # The connect timeout bounds every broker wait, so an unreachable broker fails in time.
    for m in read_topic(cfg.kafka, topic, timeout=float(cfg.kafka.connect_timeout)):
        if m.value is None:
            continue
        where = f"Kafka {topic} partition {m.partition} offset {m.offset}"
        try:
            record = codec.decode_record(m.value)
        except EncodingError as exc:
            raise EncodingError(f"{where}: {exc}") from None
        header = m.headers.get(PUBLISHED_AT_HEADER)
        if header is None:
            # A message from a producer without the header: its logical time is all there is.
            yield Published(record, record.generated_at)
            continue
        try:
            yield Published(record, int(header.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            raise EncodingError(f"{where}: header {PUBLISHED_AT_HEADER} is not epoch "
                                f"milliseconds: {header[:40]!r}") from None


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
                 provider: str = "Kubernetes", records: Iterable[Published] | None = None,
                 invoicing_period: str | None = None) -> ExportSummary:
    """Write the FOCUS CSV of the committed records with periods in `[start, end)` to `output`.

    `records` replaces the Kafka read (the records as consumed, all revisions, with their
    publication times); `invoicing_period` replaces `billing.invoicing_period`. Raises
    `ConfigError` for an empty window or an unusable output path, `ExporterError` when records
    are unpriced and `allow_unpriced` is false, and the sink errors for the broker; in every
    failure `output` is left as it was.
    """
    if end <= start:
        raise ConfigError(f"empty window: --to {iso(end)} is not after --from {iso(start)}")
    check_output(output)
    period = invoicing_period or cfg.billing.invoicing_period
    if records is not None:
        sel = select_records(records, start, end, period)
    else:
        with _quiet_librdkafka():
            sel = select_records(_read(cfg, build_codec(cfg)), start, end, period)
    unpriced = [c.record for c in sel.charges if not c.priced]
    if unpriced and not allow_unpriced:
        raise ExporterError(
            f"{len(unpriced)} of {len(sel.charges)} records have no price (first: "
            f"{_where(unpriced[0])}); they were computed without a rate card "
            "(pricing.rate_card_file). Pass --allow-unpriced to write them at cost 0 in currency XXX"
        )
    rows = focus_rows(sel, allow_unpriced=allow_unpriced, provider=provider)
    write_atomic(output, render_csv(rows))
    billed: dict[str, Decimal] = {}
    quantities: dict[str, Decimal] = {}
    for row in rows:
        cur = row["BillingCurrency"]
        billed[cur] = billed.get(cur, Decimal(0)) + Decimal(row["BilledCost"])
        # Memory and storage are both GiB-Hours, and a MIG slice is not a whole GPU: each
        # resource but cpu and memory is summed on its own.
        unit = row["PricingUnit"]
        if row["x_Resource"] not in _RESOURCE_NAMES:
            unit = f"{unit} {row['x_Resource']}"
        quantities[unit] = quantities.get(unit, Decimal(0)) + Decimal(row["PricingQuantity"])
    return ExportSummary(len(rows), sum(1 for c in sel.charges if c.correction), len(unpriced),
                         billed, quantities, sel.skipped_allocations)


def _time_arg(text: str, flag: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def cmd_export_focus(args: argparse.Namespace, *, clock: Clock) -> int:
    start = _time_arg(args.start, "--from")
    end = _time_arg(args.end, "--to")
    cfg = config_from_args(args)
    summary = export_focus(cfg, start, end, Path(args.output), allow_unpriced=args.allow_unpriced,
                           provider=args.provider_name, invoicing_period=args.billing_period)
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
    p.add_argument("--billing-period", choices=tuple(INVOICING_PERIODS), default=None,
                   help="FOCUS billing period, the UTC calendar month or quarter containing the "
                        "charge period (default: billing.invoicing_period, itself month)")
    p.add_argument("--allow-unpriced", action="store_true",
                   help="write records without a price at cost 0 in currency XXX instead of failing")
    p.add_argument("--provider-name", default="Kubernetes",
                   help="ProviderName, PublisherName and InvoiceIssuerName (default: Kubernetes)")
    p.set_defaults(handler=cmd_export_focus)


__all__: Sequence[str] = (
    "COLUMNS", "INVOICING_PERIODS", "UNPRICED_CURRENCY", "Charge", "ExportSummary", "Published",
    "Selection", "allocation_details", "billing_period", "export_focus", "focus_row", "focus_rows",
    "register", "render_csv", "select_records", "write_atomic",
)

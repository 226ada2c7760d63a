"""`export focus` against a real noida-db broker: rows checked against FOCUS's column rules."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.focus import COLUMNS
from exporter.periods import iso
from tests.focus.conftest import RATE_CARD, Run, config_file, consumed, publish, read_csv
from tests.kafka.conftest import T0

pytestmark = pytest.mark.integration
H = 3600

# FOCUS Cost and Usage columns (1.2, plus the 1.3 allocation columns); ProviderName,
# PublisherName and InvoiceIssuerName are the 1.2 names later split into *ProviderName.
FOCUS_COLUMNS = {
    "AllocatedMethodId", "AllocatedMethodDetails", "AllocatedResourceId", "AllocatedResourceName",
    "AllocatedTags", "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName",
    "BillingAccountType", "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd",
    "CapacityReservationId", "CapacityReservationStatus", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodStart", "ChargePeriodEnd",
    "ConsumedQuantity", "ConsumedUnit", "ContractApplied", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "HostProviderName", "InvoiceId", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingCurrency", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName",
    "ResourceType", "ServiceProviderName", "ServiceCategory", "ServiceName", "ServiceSubcategory",
    "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "SubAccountType", "TagDetails", "Tags",
}
REQUIRED = {
    "ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd",
    "ChargeCategory", "ChargeClass", "ChargeFrequency", "ChargeDescription", "ConsumedQuantity",
    "ConsumedUnit", "PricingQuantity", "PricingUnit", "ListUnitPrice", "ListCost", "BilledCost",
    "EffectiveCost", "ContractedCost", "ContractedUnitPrice", "BillingCurrency", "ResourceId",
    "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "Tags", "AllocatedMethodId",
    "x_RequestQuantity", "x_UsageQuantity", "x_RecordId", "x_Revision", "x_Cluster",
    "x_Namespace", "x_SampleCoverage", "x_Allocation",
}
DECIMAL_COLUMNS = (
    "ConsumedQuantity", "PricingQuantity", "ListUnitPrice", "ListCost", "ContractedUnitPrice",
    "ContractedCost", "BilledCost", "EffectiveCost", "x_RequestQuantity", "x_UsageQuantity",
    "x_SampleCoverage",
)
COST_COLUMNS = ("ListCost", "ContractedCost", "BilledCost", "EffectiveCost")
DECIMAL = re.compile(r"^\d+(\.\d+)?$")  # FOCUS Numeric Format: no exponent, no grouping
UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UNIT = re.compile(r"^[A-Za-z]+-[A-Z][a-z]+s$")  # <singular unit>-<plural time unit>
CHARGE_CATEGORIES = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
CHARGE_FREQUENCIES = {"One-Time", "Recurring", "Usage-Based"}
PRICES = {("shop", "cpu"): "0.0310", ("shop", "memory"): "0.0042",
          ("tools", "cpu"): "0.0450", ("tools", "memory"): "0.0042"}


def _t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def check_focus_rules(header: list[str], rows: list[dict[str, str]]) -> None:
    """The column rules every export must satisfy, priced or not."""
    assert header == list(COLUMNS)
    assert set(header) >= REQUIRED
    assert all(c in FOCUS_COLUMNS or c.startswith("x_") for c in header), header
    for row in rows:
        for col in DECIMAL_COLUMNS:
            assert DECIMAL.fullmatch(row[col]), (col, row[col])
        for col in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
            assert UTC_TIME.fullmatch(row[col]), (col, row[col])
        cs, ce = _t(row["ChargePeriodStart"]), _t(row["ChargePeriodEnd"])
        bs, be = _t(row["BillingPeriodStart"]), _t(row["BillingPeriodEnd"])
        assert ce > cs
        assert bs <= cs and ce <= be  # the billing period contains the charge period
        assert (bs.day, bs.hour, bs.minute, bs.second) == (1, 0, 0, 0)
        assert (be.year * 12 + be.month) - (bs.year * 12 + bs.month) == 1 and be.day == 1
        assert row["ChargeCategory"] in CHARGE_CATEGORIES and row["ChargeCategory"] == "Usage"
        assert row["ChargeFrequency"] in CHARGE_FREQUENCIES
        assert row["ChargeClass"] == ("Correction" if int(row["x_Revision"]) > 0 else "")
        assert UNIT.fullmatch(row["PricingUnit"]) and row["PricingUnit"] == row["ConsumedUnit"]
        assert row["PricingUnit"] == {"cpu": "Core-Hours", "memory": "GiB-Hours"}[row["x_Resource"]]
        assert len({row[c] for c in COST_COLUMNS}) == 1  # no discounts: all four costs equal
        assert row["ListUnitPrice"] == row["ContractedUnitPrice"]
        assert row["ConsumedQuantity"] == row["x_UsageQuantity"]
        assert re.fullmatch(r"^[A-Z]{3}$", row["BillingCurrency"])
        tags = json.loads(row["Tags"])
        assert isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        assert {"costcenter", "businessunit", "department", "team"} <= set(tags)
        assert row["ResourceId"] == (f"{row['x_Cluster']}/{row['x_Namespace']}/"
                                     f"{row['ResourceType']}/{row['ResourceName']}")
        assert row["AllocatedMethodId"].startswith("max-request-usage/")
    ids = [r["x_RecordId"] for r in rows]
    assert len(ids) == len(set(ids)), "one row per record_id"


def test_priced_export_with_a_correction(kafka_config: Callable[..., Config], tmp_path: Path,
                                         export: Callable[..., Run]) -> None:
    card = tmp_path / "rate-card.yaml"
    card.write_text(RATE_CARD)
    cfg = kafka_config(pricing={"rate_card_file": str(card)})
    # Four periods; the second is republished as revision 1; the fourth is outside the window.
    publish(cfg, [T0, T0 + H, T0 + 2 * H, T0 + 3 * H], corrections=[T0 + H])
    out = tmp_path / "focus.csv"
    run = export("--config.file", str(config_file(cfg, tmp_path / "c.yaml")),
                 "--from", iso(T0), "--to", iso(T0 + 3 * H), "--output", str(out))
    assert run.code == 0, run.err
    header, rows = read_csv(out)
    check_focus_rules(header, rows)

    held = {rid: r for rid, r in consumed(cfg).items() if r.period_end <= (T0 + 3 * H) * 1000}
    assert len(held) == 12 and len(rows) == 12  # 3 periods x 2 workloads x (cpu, memory)
    assert {r["x_RecordId"] for r in rows} == set(held)
    assert {r["ChargePeriodStart"] for r in rows} == {iso(T0), iso(T0 + H), iso(T0 + 2 * H)}

    # Only the latest revision: the corrected period carries revision 1 and its new coverage.
    for row in rows:
        corrected = row["ChargePeriodStart"] == iso(T0 + H)
        assert row["x_Revision"] == ("1" if corrected else "0")
        assert row["ChargeClass"] == ("Correction" if corrected else "")
        assert row["x_SampleCoverage"] == ("0.970000" if corrected else "1.000000")

    # Inclusive start, exclusive end: each period of a charge ends where the next one starts.
    series: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        series.setdefault((row["ResourceId"], row["x_Resource"], row["x_Allocation"]), []).append(row)
    assert len(series) == 4
    for charges in series.values():
        charges.sort(key=lambda r: r["ChargePeriodStart"])
        assert [c["ChargePeriodStart"] for c in charges] == [iso(T0 + i * H) for i in range(3)]
        for a, b in itertools.pairwise(charges):
            assert a["ChargePeriodEnd"] == b["ChargePeriodStart"]

    for row in rows:
        rec = held[row["x_RecordId"]]
        assert row["ListUnitPrice"] == PRICES[(rec.namespace, rec.resource)] + "000000"  # scale 10
        price, qty, cost = (Decimal(row[c]) for c in ("ListUnitPrice", "PricingQuantity", "ListCost"))
        assert (price * qty).quantize(Decimal("0.000001"), ROUND_HALF_EVEN) == cost
        assert row["BillingCurrency"] == row["PricingCurrency"] == "EUR"
        assert Decimal(row["PricingQuantity"]) == rec.chargeable_quantity
        assert Decimal(row["x_RequestQuantity"]) == rec.request_quantity
        assert row["x_PriceVersion"] == "2026-01"
        assert row["AllocatedMethodId"] == rec.method
        details = json.loads(row["AllocatedMethodDetails"], parse_float=Decimal)
        assert details == {"Elements": [{"AllocatedRatio": 1, "UsageUnit": rec.unit,
                                         "UsageQuantity": rec.chargeable_quantity}]}
        tags = json.loads(row["Tags"])
        if rec.workload_name == "web":
            assert tags["costcenter"] == "CC-100" and tags["team"] == "shop"
        else:
            assert tags["costcenter"] == "__unallocated__" and tags["team"] == "__unallocated__"
        assert row["BillingAccountId"] == tags["costcenter"]

    # Totals equal the sums of what a consumer holds.
    billed = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    expected_cost = sum((r.cost for r in held.values() if r.cost is not None), Decimal(0))
    assert billed == expected_cost > 0
    for unit in ("Core-Hours", "GiB-Hours"):
        total = sum((Decimal(r["PricingQuantity"]) for r in rows if r["PricingUnit"] == unit), Decimal(0))
        assert total == sum((r.chargeable_quantity for r in held.values() if r.unit == unit), Decimal(0))
    assert f"wrote 12 rows to {out}; 4 corrections; 0 unpriced; BilledCost {billed} EUR" in run.out

    # RFC 4180 on the wire: UTF-8 without BOM, CRLF line ends, quoted fields with commas.
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == 13 and b"\n" not in raw.replace(b"\r\n", b"")
    assert b',"CPU of Deployment shop/web in cluster prod, max(request, usage)",' in raw


def test_unpriced_records_are_refused_unless_allowed(kafka_config: Callable[..., Config],
                                                     tmp_path: Path, export: Callable[..., Run]) -> None:
    cfg = kafka_config()
    publish(cfg, [T0, T0 + H], corrections=[T0])
    path = config_file(cfg, tmp_path / "c.yaml")
    out = tmp_path / "focus.csv"
    window = ("--from", iso(T0), "--to", iso(T0 + 2 * H))

    run = export("--config.file", str(path), *window, "--output", str(out))
    assert run.code == 1
    assert len(run.err.strip().splitlines()) == 1 and "Traceback" not in run.err
    assert "8 of 8 records have no price" in run.err and "--allow-unpriced" in run.err
    assert not out.exists() and list(tmp_path.glob(".focus.csv.*")) == []

    run = export("--config.file", str(path), *window, "--output", str(out), "--allow-unpriced")
    assert run.code == 0, run.err
    header, rows = read_csv(out)
    check_focus_rules(header, rows)
    held = consumed(cfg)
    assert len(rows) == len(held) == 8
    for row in rows:
        assert all(row[c] == "0" for c in (*COST_COLUMNS, "ListUnitPrice", "ContractedUnitPrice"))
        assert row["BillingCurrency"] == "XXX" and row["x_PriceVersion"] == ""
        assert row["ChargeDescription"].endswith("(unpriced)")
        assert Decimal(row["PricingQuantity"]) == held[row["x_RecordId"]].chargeable_quantity
    assert sum(r["ChargeClass"] == "Correction" for r in rows) == 4
    assert "8 unpriced" in run.out and "BilledCost 0 XXX" in run.out


def test_window_selects_whole_periods_and_an_empty_window_has_a_header(
        kafka_config: Callable[..., Config], tmp_path: Path, export: Callable[..., Run]) -> None:
    card = tmp_path / "rate-card.yaml"
    card.write_text(RATE_CARD)
    cfg = kafka_config(pricing={"rate_card_file": str(card)})
    publish(cfg, [T0, T0 + H, T0 + 2 * H])
    path = str(config_file(cfg, tmp_path / "c.yaml"))
    out = tmp_path / "f.csv"
    # Mid-period bounds: only the period wholly inside [from, to) is exported.
    run = export("--config.file", path, "--from", iso(T0 + 60), "--to", iso(T0 + 3 * H - 60),
                 "--output", str(out))
    assert run.code == 0, run.err
    _, rows = read_csv(out)
    assert {r["ChargePeriodStart"] for r in rows} == {iso(T0 + H)} and len(rows) == 4
    out.write_text("previous export\n")
    run = export("--config.file", path, "--from", iso(T0 + 10 * H), "--to", iso(T0 + 11 * H),
                 "--output", str(out))
    assert run.code == 0 and "wrote 0 rows" in run.out
    header, rows = read_csv(out)
    assert header == list(COLUMNS) and rows == []


def test_errors_are_one_line_and_leave_no_file(kafka_config: Callable[..., Config], tmp_path: Path,
                                               export: Callable[..., Run]) -> None:
    unreachable = kafka_config(kafka={"bootstrap_servers": "127.0.0.1:1", "connect_timeout": 1})
    out = tmp_path / "focus.csv"
    window = ("--from", iso(T0), "--to", iso(T0 + H))

    def fails(code: int, pattern: str, *args: str) -> None:
        run = export(*args)
        assert run.code == code, (run.code, run.err)
        lines = run.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in run.err, run.err
        assert re.search(pattern, lines[0]), lines[0]
        assert not out.exists() and list(tmp_path.glob(".focus.csv.*")) == []

    path = str(config_file(unreachable, tmp_path / "u.yaml"))
    fails(1, r"Kafka 127\.0\.0\.1:1", "--config.file", path, *window, "--output", str(out))
    fails(2, r"empty window: --to .* is not after --from", "--config.file", path,
          "--from", iso(T0 + H), "--to", iso(T0), "--output", str(out))
    fails(2, r"--from: not a time: 'yesterday'", "--config.file", path,
          "--from", "yesterday", "--to", iso(T0), "--output", str(out))
    fails(2, r"--output .*missing/focus\.csv: directory .*missing does not exist",
          "--config.file", path, *window, "--output", str(tmp_path / "missing" / "focus.csv"))
    fails(2, r"--output .*: is a directory", "--config.file", path, *window, "--output", str(tmp_path))

    never_written = kafka_config()
    path = str(config_file(never_written, tmp_path / "n.yaml"))
    fails(1, r"topic records-\w+ does not exist", "--config.file", path, *window, "--output", str(out))


def test_an_undecodable_message_is_named_by_partition_and_offset(
        kafka_config: Callable[..., Config], tmp_path: Path, export: Callable[..., Run]) -> None:
    from confluent_kafka import Producer

    cfg = kafka_config()
    publish(cfg, [T0])  # creates the topics
    producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    producer.produce(cfg.kafka.topics.records, key=b"junk", value=b"not avro", partition=1)
    assert producer.flush(10) == 0
    out = tmp_path / "focus.csv"
    run = export("--config.file", str(config_file(cfg, tmp_path / "c.yaml")), "--from", iso(T0),
                 "--to", iso(T0 + H), "--output", str(out), "--allow-unpriced")
    assert run.code == 1 and "Traceback" not in run.err
    (line,) = run.err.strip().splitlines()
    assert re.search(rf"Kafka {cfg.kafka.topics.records} partition 1 offset \d+: ", line), line
    assert not out.exists()

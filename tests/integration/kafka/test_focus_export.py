"""`export focus` against a real noida-db broker: rows checked against FOCUS's column rules."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from exporter.config import Config
from exporter.focus import COLUMNS
from exporter.periods import iso
from tests.rigs.focus import RATE_CARD, Run, config_file, consumed, publish, read_csv
from tests.rigs.focus_spec import validate
from tests.rigs.kafka import T0

H = 3600

DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")  # what the export writes: plain decimals, no exponent
COST_COLUMNS = ("ListCost", "ContractedCost", "BilledCost", "EffectiveCost")
DEC = 1_796_083_200  # 2026-12-01T00:00:00Z, the end of T0's billing month
PRICES = {("shop", "cpu"): "0.0310", ("shop", "memory"): "0.0042",
          ("tools", "cpu"): "0.0450", ("tools", "memory"): "0.0042"}


def _t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def check_focus_rules(header: list[str], rows: list[dict[str, str]]) -> None:
    """The FOCUS column rules, from the specification (tests/rigs/focus_spec.py), and the
    export's own promises (docs/focus.md), priced or not."""
    assert header == list(COLUMNS)
    problems = validate(header, rows,
                        allocated=lambda r: r["x_Allocation"] == "shared-distribution",
                        origin=lambda r: (r["ChargePeriodStart"], r["x_Cluster"], r["x_Resource"],
                                          r["x_Revision"], r["BillingPeriodStart"]))
    assert problems == []
    for row in rows:
        for col in (*COST_COLUMNS, "ConsumedQuantity", "PricingQuantity", "ListUnitPrice",
                    "x_RequestQuantity", "x_UsageQuantity", "x_SampleCoverage"):
            assert DECIMAL.fullmatch(row[col]), (col, row[col])
        cs, ce = _t(row["ChargePeriodStart"]), _t(row["ChargePeriodEnd"])
        bs, be = _t(row["BillingPeriodStart"]), _t(row["BillingPeriodEnd"])
        assert ce > cs
        assert (bs.day, bs.hour, bs.minute, bs.second) == (1, 0, 0, 0)
        assert (be.year * 12 + be.month) - (bs.year * 12 + bs.month) == 1 and be.day == 1
        if row["ChargeClass"] == "Correction":  # invoiced in a later, then open, billing period
            assert ce <= bs and row["x_CorrectedRevision"] != ""
        else:  # the billing period contains the charge period
            assert row["ChargeClass"] == "" and bs <= cs and ce <= be
        assert row["ChargeCategory"] == "Usage"
        assert row["PricingUnit"] == row["ConsumedUnit"]
        assert row["PricingUnit"] == {"cpu": "Core-Hours", "memory": "GiB-Hours"}[row["x_Resource"]]
        assert len({row[c] for c in COST_COLUMNS}) == 1  # no discounts: all four costs equal
        assert row["ListUnitPrice"] == row["ContractedUnitPrice"]
        assert row["ConsumedQuantity"] == row["x_UsageQuantity"]
        tags = json.loads(row["Tags"])
        assert {"costcenter", "businessunit", "department", "team"} <= set(tags)
        assert row["ResourceId"] == (f"{row['x_Cluster']}/{row['x_Namespace']}/"
                                     f"{row['ResourceType']}/{row['ResourceName']}")
        assert row["x_Method"].startswith("max-request-usage/")
        assert row["AllocatedMethodId"] == row["AllocatedMethodDetails"] == ""  # no sharing here
    keys = [(r["x_RecordId"], r["BillingPeriodStart"]) for r in rows]
    assert len(keys) == len(set(keys)), "one row per record and billing period"


def test_priced_export_with_a_correction(kafka_config: Callable[..., Config], tmp_path: Path,
                                         export: Callable[..., Run]) -> None:
    card = tmp_path / "rate-card.yaml"
    card.write_text(RATE_CARD)
    cfg = kafka_config(pricing={"rate_card_file": str(card)})
    # Four periods, the fourth outside the window. The third is republished as revision 1 in
    # November, while its billing month is open; the second in December, after it closed.
    publish(cfg, [T0, T0 + H, T0 + 2 * H, T0 + 3 * H], corrections=[T0 + 2 * H])
    publish(cfg, [], corrections=[T0 + H], corrections_at=DEC + 86400)
    out = tmp_path / "focus.csv"
    run = export("--config.file", str(config_file(cfg, tmp_path / "c.yaml")),
                 "--from", iso(T0), "--to", iso(T0 + 3 * H), "--output", str(out))
    assert run.code == 0, run.err
    header, rows = read_csv(out)
    check_focus_rules(header, rows)

    held = {rid: r for rid, r in consumed(cfg).items() if r.period_end <= (T0 + 3 * H) * 1000}
    base = [r for r in rows if r["ChargeClass"] == ""]
    fixes = [r for r in rows if r["ChargeClass"] == "Correction"]
    assert len(held) == 12 and len(base) == 12  # 3 periods x 2 workloads x (cpu, memory)
    assert {r["x_RecordId"] for r in base} == set(held)
    assert {r["ChargePeriodStart"] for r in base} == {iso(T0), iso(T0 + H), iso(T0 + 2 * H)}

    # The revision inside the open billing month replaced its rows; November holds revision 0
    # of the period revised in December, and December a correction row for each record.
    for row in base:
        revised_in_november = row["ChargePeriodStart"] == iso(T0 + 2 * H)
        assert row["x_Revision"] == ("1" if revised_in_november else "0")
        assert row["x_SampleCoverage"] == ("0.970000" if revised_in_november else "1.000000")
        assert row["BillingPeriodStart"] == "2026-11-01T00:00:00Z"
    assert len(fixes) == 4
    for row in fixes:
        rec = held[row["x_RecordId"]]
        assert (row["ChargePeriodStart"], row["x_Revision"], row["x_CorrectedRevision"]) == (
            iso(T0 + H), "1", "0")
        assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == ("2026-12-01T00:00:00Z",
                                                                       "2027-01-01T00:00:00Z")
        assert row["x_SampleCoverage"] == "0.970000" and row["x_Method"] == rec.method
        # Same quantities re-measured: the difference to the invoiced row is zero.
        assert row["BilledCost"] == "0.000000" and Decimal(row["PricingQuantity"]) == 0

    # Inclusive start, exclusive end: each period of a charge ends where the next one starts.
    series: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in base:
        series.setdefault((row["ResourceId"], row["x_Resource"], row["x_Allocation"]), []).append(row)
    assert len(series) == 4
    for charges in series.values():
        charges.sort(key=lambda r: r["ChargePeriodStart"])
        assert [c["ChargePeriodStart"] for c in charges] == [iso(T0 + i * H) for i in range(3)]
        for a, b in itertools.pairwise(charges):
            assert a["ChargePeriodEnd"] == b["ChargePeriodStart"]

    for row in base:
        rec = held[row["x_RecordId"]]
        assert row["ListUnitPrice"] == PRICES[(rec.namespace, rec.resource)] + "000000"  # scale 10
        price, qty, cost = (Decimal(row[c]) for c in ("ListUnitPrice", "PricingQuantity", "ListCost"))
        assert (price * qty).quantize(Decimal("0.000001"), ROUND_HALF_EVEN) == cost
        assert row["BillingCurrency"] == row["PricingCurrency"] == "EUR"
        assert Decimal(row["PricingQuantity"]) == rec.chargeable_quantity
        assert Decimal(row["x_RequestQuantity"]) == rec.request_quantity
        assert row["x_PriceVersion"] == "2026-01"
        tags = json.loads(row["Tags"])
        if rec.workload_name == "web":
            assert tags["costcenter"] == "CC-100" and tags["team"] == "shop"
        else:
            assert tags["costcenter"] == "__unallocated__" and tags["team"] == "__unallocated__"
        assert row["BillingAccountId"] == tags["costcenter"]

    # Totals, corrections included, equal the sums of what an upserting consumer holds.
    billed = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    expected_cost = sum((r.cost for r in held.values() if r.cost is not None), Decimal(0))
    assert billed == expected_cost > 0
    for unit in ("Core-Hours", "GiB-Hours"):
        total = sum((Decimal(r["PricingQuantity"]) for r in rows if r["PricingUnit"] == unit), Decimal(0))
        assert total == sum((r.chargeable_quantity for r in held.values() if r.unit == unit), Decimal(0))
    assert f"wrote 16 rows to {out}; 4 corrections; 0 unpriced; BilledCost {billed} EUR" in run.out

    # RFC 4180 on the wire: UTF-8 without BOM, CRLF line ends, quoted fields with commas.
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == 17 and b"\n" not in raw.replace(b"\r\n", b"")
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
    # The revisions were published inside the open billing month: they replace their rows.
    assert sum(r["ChargeClass"] == "Correction" for r in rows) == 0
    assert {r["x_Revision"] for r in rows if r["ChargePeriodStart"] == iso(T0)} == {"1"}
    assert "0 corrections" in run.out and "8 unpriced" in run.out and "BilledCost 0 XXX" in run.out


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


def test_publication_time_comes_from_the_header_and_the_billing_period_from_the_config(
        kafka_config: Callable[..., Config], tmp_path: Path, export: Callable[..., Run]) -> None:
    from confluent_kafka import Producer

    from exporter.wiring import build_codec
    from tests.unit.focus.test_focus_rows import record

    card = tmp_path / "rate-card.yaml"
    card.write_text(RATE_CARD)
    cfg = kafka_config(pricing={"rate_card_file": str(card)})
    publish(cfg, [T0])  # creates the topics
    codec = build_codec(cfg)
    rev0 = record(T0 + 2 * H, cluster="other")
    rev1 = record(T0 + 2 * H, cluster="other", revision=1, cost=Decimal("0.020000"))
    (no_header,) = codec.records([rev0], ())
    (late,) = codec.records([rev1], (("published_at", str((DEC + 86400) * 1000).encode()),))
    producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    for m in (no_header, late):
        producer.produce(m.topic, key=m.key, value=m.value, headers=list(m.headers))
    assert producer.flush(10) == 0
    out = tmp_path / "focus.csv"
    path = str(config_file(cfg, tmp_path / "c.yaml"))
    window = ("--from", iso(T0), "--to", iso(T0 + 3 * H), "--output", str(out))

    run = export("--config.file", path, *window)
    assert run.code == 0, run.err
    header, rows = read_csv(out)
    check_focus_rules(header, rows)
    other = [r for r in rows if r["x_Cluster"] == "other"]
    # Without a header, revision 0 counts as published at its generated_at: November's row.
    assert [(r["ChargeClass"], r["BillingPeriodStart"], r["BilledCost"]) for r in other] == [
        ("", "2026-11-01T00:00:00Z", "0.015500"),
        ("Correction", "2026-12-01T00:00:00Z", "0.004500")]

    # billing.invoicing_period: quarter keeps December open for November: no correction.
    path = str(config_file(cfg.model_copy(update={"billing": cfg.billing.model_copy(
        update={"invoicing_period": "quarter"})}), tmp_path / "q.yaml"))
    run = export("--config.file", path, *window)
    assert run.code == 0, run.err
    _, rows = read_csv(out)
    other = [r for r in rows if r["x_Cluster"] == "other"]
    assert [(r["ChargeClass"], r["BillingPeriodStart"], r["BilledCost"]) for r in other] == [
        ("", "2026-10-01T00:00:00Z", "0.020000")]
    run = export("--config.file", path, *window, "--billing-period", "month")  # the flag wins
    assert run.code == 0 and "1 corrections" in run.out, run.err

    bad = dataclasses.replace(rev1, revision=2)
    (m,) = codec.records([bad], (("published_at", b"yesterday"),))
    producer.produce(m.topic, key=m.key, value=m.value, headers=list(m.headers))
    assert producer.flush(10) == 0
    run = export("--config.file", path, *window)
    assert run.code == 1 and "Traceback" not in run.err
    (line,) = run.err.strip().splitlines()
    assert re.search(rf"Kafka {cfg.kafka.topics.records} partition \d+ offset \d+: header "
                     r"published_at is not epoch milliseconds: b'yesterday'", line), line

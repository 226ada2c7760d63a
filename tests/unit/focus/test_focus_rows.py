"""FOCUS rows from billing records, without a broker: formats, edge months, shares, files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.avro import SingleObjectFraming
from exporter.avro.messages import AvroCodec
from exporter.config import TopicsConfig
from exporter.errors import ExporterError
from exporter.focus import (
    COLUMNS,
    Published,
    export_focus,
    fmt_decimal,
    focus_row,
    focus_rows,
    render_csv,
    select_records,
    write_atomic,
)
from exporter.records import BillingRecord, record_id
from tests.rigs.focus_spec import validate
from tests.rigs.kafka import T0

H = 3600
DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def record(start: int = T0, end: int | None = None, **changes: object) -> BillingRecord:
    """A priced cpu record of Deployment shop/web; `changes` override fields."""
    from exporter.periods import Period

    end = start + H if end is None else end
    fields: dict[str, object] = dict(
        period_start=start * 1000, period_end=end * 1000, cluster="prod", namespace="shop",
        workload_kind="Deployment", workload_name="web", costcenter="CC-100",
        businessunit="__unallocated__", department="__invalid__", team="shop",
        org_label_sources={"costcenter": "workload", "businessunit": "unallocated",
                           "department": "namespace", "team": "namespace"},
        invalid_org_values={"department": "R&D, Europe"}, labels={"tier": "gold"},
        resource="cpu", unit="Core-Hours", usage_quantity=Decimal("0.250000000"),
        request_quantity=Decimal("0.500000000"), chargeable_quantity=Decimal("0.500000000"),
        unit_price=Decimal("0.0310000000"), cost=Decimal("0.015500"), currency="EUR",
        price_version="2026-01", revision=0, method="max-request-usage/pod/10s/v1",
        allocation="direct", sample_coverage=Decimal("1.000000"), exporter_version="0.1.0",
        generated_at=(end + 300) * 1000,
    )
    fields.update(changes)
    rid = record_id(cluster=str(fields["cluster"]), period=Period(start, end),
                    namespace=str(fields["namespace"]), workload_kind=str(fields["workload_kind"]),
                    workload_name=str(fields["workload_name"]), resource=str(fields["resource"]),
                    allocation=str(fields["allocation"]), method=str(fields["method"]))
    return BillingRecord(record_id=rid, **fields)  # type: ignore[arg-type]


def on_time(r: BillingRecord) -> Published:
    """`r` as read from Kafka, published when it was generated (inside its billing period)."""
    return Published(r, r.generated_at)


def avro_round_trip(r: BillingRecord) -> BillingRecord:
    """The record as a consumer decodes it from the real single-object encoding."""
    codec = AvroCodec(SingleObjectFraming(), TopicsConfig())
    (msg,) = codec.records([r], ())
    return codec.decode_record(msg.value)


def test_decimals_are_plain_as_carried_even_when_avro_gives_exponents() -> None:
    decoded = avro_round_trip(record(usage_quantity=Decimal("0E-9"),
                                     request_quantity=Decimal("1.00E-7"),
                                     chargeable_quantity=Decimal("1.00E-7"), cost=Decimal("0E-6")))
    assert str(decoded.usage_quantity) == "0E-9"  # what str() would have written
    row = focus_row(decoded)
    assert row["ConsumedQuantity"] == row["x_UsageQuantity"] == "0.000000000"
    assert row["PricingQuantity"] == row["x_RequestQuantity"] == "0.000000100"
    assert row["BilledCost"] == "0.000000" and row["ListUnitPrice"] == "0.0310000000"
    assert row["x_SampleCoverage"] == "1.000000"


@given(st.decimals(min_value=0, max_value=Decimal("999999999.999999999"), places=9,
                   allow_nan=False, allow_infinity=False))
def test_any_schema_quantity_formats_exactly(value: Decimal) -> None:
    text = fmt_decimal(value)
    assert DECIMAL.fullmatch(text) and Decimal(text) == value


def test_december_bills_into_a_month_ending_next_year() -> None:
    dec31 = 1_798_675_200  # 2026-12-31T00:00:00Z
    def bounds(row: dict[str, str], kind: str) -> tuple[str, str]:
        return row[f"{kind}PeriodStart"], row[f"{kind}PeriodEnd"]

    row = focus_row(record(dec31 + 23 * H))
    assert bounds(row, "Charge") == ("2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z")
    assert bounds(row, "Billing") == ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")
    jan = focus_row(record(dec31 + 24 * H))
    assert bounds(jan, "Billing") == ("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z")


def test_a_period_across_a_month_boundary_or_off_the_second_is_refused() -> None:
    dec31 = 1_798_675_200
    with pytest.raises(ExporterError, match=r"record \w+ \(prod/shop/Deployment/web cpu\): the charge "
                                            r"period crosses the end of the billing period 2026-12"):
        focus_row(record(dec31, dec31 + 2 * 86400))
    with pytest.raises(ExporterError, match="not a whole second"):
        focus_row(dataclasses.replace(record(), period_end=(T0 + H) * 1000 + 1))


def test_tags_carry_org_keys_over_labels_and_explicit_placeholders() -> None:
    row = focus_row(record(labels={"tier": "gold", "team": "label-says-other", "owner": "Zoë"}))
    tags = json.loads(row["Tags"])
    assert tags == {"businessunit": "__unallocated__", "costcenter": "CC-100",
                    "department": "__invalid__", "owner": "Zoë", "team": "shop", "tier": "gold"}
    assert json.loads(row["x_InvalidOrgValues"]) == {"department": "R&D, Europe"}
    assert json.loads(row["x_OrgLabelSources"])["businessunit"] == "unallocated"


def test_a_shared_distribution_share_gets_its_implied_rate() -> None:
    share = record(allocation="shared-distribution", method="shared-proportional/v1",
                   usage_quantity=Decimal("0E-9"), request_quantity=Decimal("0E-9"),
                   chargeable_quantity=Decimal("0.300000000"), unit_price=None,
                   cost=Decimal("0.010000"), labels={"x_shared_from": "kube-system/DaemonSet/agent"})
    row = focus_row(share)
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == "0.0333333333"
    assert row["BilledCost"] == "0.010000" and row["ConsumedQuantity"] == "0.000000000"
    assert row["x_Allocation"] == "shared-distribution"
    assert row["ChargeDescription"].startswith("CPU share of a shared workload pool charged to")


def test_selection_keeps_the_latest_revision_in_window_and_only_charges() -> None:
    first = record(T0)
    newer = dataclasses.replace(first, revision=2, cost=Decimal("0.020000"))
    stale = dataclasses.replace(first, revision=1, cost=Decimal("9.000000"))
    audit = record(T0, allocation="shared-source")
    outside = record(T0 + 5 * H)
    mem = record(T0, resource="memory", unit="GiB-Hours")
    sel = select_records([on_time(r) for r in (first, newer, stale, audit, outside, mem)],
                         T0, T0 + 2 * H)
    assert [(c.record.resource, c.record.revision, c.record.cost) for c in sel.charges] == [
        ("cpu", 2, Decimal("0.020000")), ("memory", 0, Decimal("0.015500"))]
    assert sel.skipped_allocations == {"shared-source": 1}


def test_csv_quotes_commas_quotes_and_newlines(tmp_path: Path) -> None:
    odd = record(workload_name='we"b,\nnext', labels={"note": "a,b"})
    text = render_csv([focus_row(odd)])
    assert text.startswith(",".join(COLUMNS) + "\r\n")
    (row,) = list(csv.DictReader(io.StringIO(text, newline="")))
    assert row["ResourceName"] == 'we"b,\nnext' and json.loads(row["Tags"])["note"] == "a,b"
    assert '"we""b,\nnext"' in text


def test_unpriced_records_without_permission_name_the_record(tmp_path: Path) -> None:
    from exporter.config import load_config

    cfg = load_config(environ={}, overrides={"sysdig": {"token": "t"}})
    unpriced = record(unit_price=None, cost=None, currency=None, price_version=None)
    out = tmp_path / "f.csv"
    with pytest.raises(ExporterError, match=r"1 of 2 records have no price \(first: record \w+ "
                                            r"\(prod/shop/Deployment/web memory\)\)"):
        export_focus(cfg, T0, T0 + H, out,
                     records=[on_time(record()), on_time(dataclasses.replace(
                         unpriced, resource="memory", record_id="m" * 32))])
    assert not out.exists()
    summary = export_focus(cfg, T0, T0 + H, out, allow_unpriced=True, provider="Platform",
                           records=[on_time(record()), on_time(unpriced)])
    assert summary.rows == 1 and summary.unpriced == 1  # same record_id: revision tie, later wins
    (row,) = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert row["BillingCurrency"] == "XXX" and row["ProviderName"] == "Platform"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "focus.csv"
    target.write_text("old\n")
    write_atomic(target, "new\r\n")
    assert target.read_bytes() == b"new\r\n"
    blocker = tmp_path / "busy"
    (blocker / "child").mkdir(parents=True)  # a non-empty directory cannot be replaced by a file
    with pytest.raises(ExporterError, match=r"cannot write .*busy: "):
        write_atomic(blocker, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "focus.csv"]
    assert target.read_bytes() == b"new\r\n"


# --- Allocation columns: only on rows produced by an allocation -------------------------------

NOV = 1_793_491_200  # 2026-11-01T00:00:00Z
DEC = 1_796_083_200  # 2026-12-01T00:00:00Z
JAN = 1_798_761_600  # 2027-01-01T00:00:00Z


def shared_period(start: int = T0, revision: int = 0) -> list[BillingRecord]:
    """One period of cluster prod, cpu: a kube-system agent (0.6 core-hours) shared over
    shop/web (0.5) and shop/api (1.0), as exporter/shared_costs.py publishes it."""
    def rec(ns: str, name: str, allocation: str, qty: str, cost: str, **kw: object) -> BillingRecord:
        return record(start, namespace=ns, workload_name=name, allocation=allocation,
                      chargeable_quantity=Decimal(qty), cost=Decimal(cost), revision=revision, **kw)
    pool = {"labels": {"x_shared_from": "kube-system/DaemonSet/agent"},
            "method": "shared-proportional/v1", "unit_price": None,
            "usage_quantity": Decimal("0E-9"), "request_quantity": Decimal("0E-9")}
    return [
        rec("kube-system", "agent", "shared-source", "0.600000000", "0.018600"),
        rec("shop", "web", "direct", "0.500000000", "0.015500"),
        rec("shop", "api", "direct", "1.000000000", "0.031000"),
        rec("shop", "web", "shared-distribution", "0.200000000", "0.006200", **pool),
        rec("shop", "api", "shared-distribution", "0.400000000", "0.012400", **pool),
    ]


def rows_of(published: list[Published], start: int = T0, end: int = T0 + H,
            invoicing_period: str = "month") -> list[dict[str, str]]:
    sel = select_records(published, start, end, invoicing_period=invoicing_period)
    return focus_rows(sel)


def test_allocation_columns_are_only_on_shared_distribution_rows() -> None:
    rows = rows_of([on_time(r) for r in shared_period()])
    direct = [r for r in rows if r["x_Allocation"] == "direct"]
    shares = [r for r in rows if r["x_Allocation"] == "shared-distribution"]
    assert len(direct) == 2 and len(shares) == 2
    for row in direct:
        assert row["AllocatedMethodId"] == "" and row["AllocatedMethodDetails"] == ""
        assert row["x_Method"] == "max-request-usage/pod/10s/v1"  # the calculation stays visible
    by_name = {r["ResourceName"]: r for r in shares}
    for name, ratio, basis in (("web", "1/3", "0.500000000"), ("api", "2/3", "1.000000000")):
        row = by_name[name]
        assert row["AllocatedMethodId"] == row["x_Method"] == "shared-proportional/v1"
        details = json.loads(row["AllocatedMethodDetails"], parse_float=Decimal)
        (element,) = details["Elements"]
        # The share of the pool the recipient got, in proportion to its own chargeable quantity.
        assert abs(element["AllocatedRatio"] - Decimal(eval(ratio))) < Decimal("1E-12")  # noqa: S307
        assert element["UsageUnit"] == "Core-Hours"
        assert element["UsageQuantity"] == Decimal(basis)
        assert details["x_SharedFrom"] == "kube-system/DaemonSet/agent"
    total = sum(json.loads(r["AllocatedMethodDetails"], parse_float=Decimal)["Elements"][0]
                ["AllocatedRatio"] for r in shares)
    assert total == 1  # exactly: the ratios of one origin charge sum to 1


def test_rows_pass_the_focus_spec_validator() -> None:
    published = [on_time(r) for r in shared_period()]
    rows = rows_of(published)
    problems = validate(list(COLUMNS), rows,
                        allocated=lambda r: r["x_Allocation"] == "shared-distribution",
                        origin=lambda r: (r["ChargePeriodStart"], r["x_Cluster"], r["x_Resource"],
                                          r["x_Revision"], r["BillingPeriodStart"]))
    assert problems == []


# --- ChargeClass: Correction only for a billing period already closed ------------------------


def test_a_revision_inside_the_open_billing_period_replaces_its_row() -> None:
    first = record(NOV + 5 * 86400)
    later = dataclasses.replace(first, revision=1, cost=Decimal("0.020000"),
                                chargeable_quantity=Decimal("0.600000000"))
    (row,) = rows_of([Published(first, (NOV + 5 * 86400 + H) * 1000),
                      Published(later, (DEC - 1) * 1000)], NOV, DEC)
    assert row["ChargeClass"] == "" and row["x_Revision"] == "1"
    assert row["BilledCost"] == "0.020000" and row["PricingQuantity"] == "0.600000000"
    assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == ("2026-11-01T00:00:00Z",
                                                                   "2026-12-01T00:00:00Z")


def test_revisions_after_the_billing_period_closed_are_corrections_in_the_open_one() -> None:
    rev0 = record(NOV + 5 * 86400)
    rev1 = dataclasses.replace(rev0, revision=1, cost=Decimal("0.020000"),
                               chargeable_quantity=Decimal("0.600000000"),
                               usage_quantity=Decimal("0.300000000"))
    rev2 = dataclasses.replace(rev0, revision=2, cost=Decimal("0.012000"),
                               chargeable_quantity=Decimal("0.400000000"),
                               usage_quantity=Decimal("0.200000000"))
    rev3 = dataclasses.replace(rev0, revision=3, cost=Decimal("0.013000"),
                               chargeable_quantity=Decimal("0.450000000"),
                               usage_quantity=Decimal("0.200000000"))
    published = [Published(rev0, (NOV + 6 * 86400) * 1000),
                 Published(rev1, (DEC + 2 * 86400) * 1000),   # November closed: a correction
                 Published(rev2, (DEC + 9 * 86400) * 1000),   # replaces rev1 in open December
                 Published(rev3, (JAN + 86400) * 1000)]       # December closed too
    rows = rows_of(published, NOV, DEC)
    assert [(r["ChargeClass"], r["BillingPeriodStart"][:7], r["x_Revision"],
             r["x_CorrectedRevision"]) for r in rows] == [
        ("", "2026-11", "0", ""), ("Correction", "2026-12", "2", "0"),
        ("Correction", "2027-01", "3", "2")]
    base, dec, jan = rows
    assert base["BilledCost"] == "0.015500" and base["PricingQuantity"] == "0.500000000"
    # A correction carries the difference to what the closed billing period holds.
    assert dec["BilledCost"] == dec["ListCost"] == dec["EffectiveCost"] == "-0.003500"
    assert dec["PricingQuantity"] == "-0.100000000" and dec["ConsumedQuantity"] == "-0.050000000"
    assert jan["BilledCost"] == "0.001000" and jan["PricingQuantity"] == "0.050000000"
    assert jan["ConsumedQuantity"] == "0.000000000"
    for row in (dec, jan):  # the charge period stays the one corrected
        assert row["ChargePeriodStart"] == base["ChargePeriodStart"]
        assert row["x_RecordId"] == base["x_RecordId"]
    # Summing the rows gives the latest revision.
    assert sum(Decimal(r["BilledCost"]) for r in rows) == rev3.cost
    assert sum(Decimal(r["PricingQuantity"]) for r in rows) == rev3.chargeable_quantity
    assert validate(list(COLUMNS), rows) == []


def test_a_record_first_seen_in_a_correction_is_a_correction_from_nothing() -> None:
    rev1 = record(NOV + 5 * 86400, revision=1)
    (row,) = rows_of([Published(rev1, (DEC + 86400) * 1000)], NOV, DEC)
    assert row["ChargeClass"] == "Correction" and row["BillingPeriodStart"] == "2026-12-01T00:00:00Z"
    assert row["BilledCost"] == "0.015500" and row["x_CorrectedRevision"] == ""
    late_first = record(NOV + 5 * 86400)  # revision 0 published late is not a correction
    (row,) = rows_of([Published(late_first, (DEC + 86400) * 1000)], NOV, DEC)
    assert row["ChargeClass"] == "" and row["BillingPeriodStart"] == "2026-11-01T00:00:00Z"


def test_a_correction_cannot_change_the_currency() -> None:
    rev0 = record(NOV + 5 * 86400)
    rev1 = dataclasses.replace(rev0, revision=1, currency="USD")
    with pytest.raises(ExporterError, match=r"record \w+ \(prod/shop/Deployment/web cpu\): revision "
                                            r"1 changes the currency from EUR to USD"):
        rows_of([on_time(rev0), Published(rev1, (DEC + 86400) * 1000)], NOV, DEC)


def test_a_quarterly_invoicing_period_keeps_december_open_for_november() -> None:
    rev0 = record(NOV + 5 * 86400)
    rev1 = dataclasses.replace(rev0, revision=1, cost=Decimal("0.020000"))
    published = [on_time(rev0), Published(rev1, (DEC + 86400) * 1000)]
    (row,) = rows_of(published, NOV, DEC, invoicing_period="quarter")
    assert row["ChargeClass"] == "" and row["x_Revision"] == "1"
    assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == ("2026-10-01T00:00:00Z",
                                                                   "2027-01-01T00:00:00Z")
    rev2 = dataclasses.replace(rev0, revision=2, cost=Decimal("0.030000"))
    rows = rows_of([*published, Published(rev2, (JAN + 86400) * 1000)], NOV, DEC,
                   invoicing_period="quarter")
    assert [(r["ChargeClass"], r["BillingPeriodStart"][:7], r["BilledCost"]) for r in rows] == [
        ("", "2026-10", "0.020000"), ("Correction", "2027-01", "0.010000")]


def test_the_invoicing_period_is_a_validated_setting() -> None:
    from exporter.config import load_config
    from exporter.errors import ConfigError

    cfg = load_config(environ={}, overrides={"sysdig": {"token": "t"}})
    assert cfg.billing.invoicing_period == "month"
    cfg = load_config(environ={"CHARGEBACK_BILLING__INVOICING_PERIOD": "quarter"},
                      overrides={"sysdig": {"token": "t"}})
    assert cfg.billing.invoicing_period == "quarter"
    with pytest.raises(ConfigError, match=r"billing\.invoicing_period"):
        load_config(environ={}, overrides={"sysdig": {"token": "t"},
                                           "billing": {"invoicing_period": "fortnight"}})


# --- The validator itself catches what the spec forbids ---------------------------------------


def test_the_validator_rejects_what_the_spec_forbids() -> None:
    (good,) = rows_of([on_time(record())])
    assert validate(list(COLUMNS), [good]) == []
    header = [c for c in COLUMNS if c != "BilledCost"] + ["Cost"]
    assert validate(header, [good]) == ["mandatory column BilledCost is missing",
                                        "column Cost is not a FOCUS column and has no x_ prefix",
                                        "FOCUS columns after custom columns: ['Cost']"]

    def problems(**changes: str) -> list[str]:
        return validate(list(COLUMNS), [{**good, **changes}])

    assert problems(EffectiveCost="")[0].endswith("null, but the column allows no nulls")
    assert "Numeric Format" in problems(ListCost="1,5")[0]
    assert "Numeric Format" in problems(ListCost="+1.5")[0]
    assert problems(ListCost="35.2E-7") == []
    assert "Date/Time" in problems(ChargePeriodStart="2026-11-06 21:00:00")[0]
    assert "allowed values" in problems(ChargeCategory="Consumption")[0]
    assert "allowed values" in problems(ChargeClass="Regular")[0]
    assert "subcategory of ServiceCategory" in problems(ServiceSubcategory="Relational Databases")[0]
    assert "ISO 4217" in problems(BillingCurrency="euro")[0]
    assert "Unit Format" in problems(PricingUnit="core hours")[0]
    assert "Key-Value" in problems(Tags='{"a":{"b":1}}')[0]
    assert "MUST be null" in problems(AllocatedMethodId="max-request-usage/pod/10s/v1")[0]
    assert "MUST NOT be null" in problems(ListUnitPrice="")[0]
    assert problems(ListUnitPrice="", ChargeClass="Correction") == []

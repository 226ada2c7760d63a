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
from exporter.codec import AvroCodec
from exporter.config import TopicsConfig
from exporter.errors import ExporterError
from exporter.focus import (
    COLUMNS,
    export_focus,
    fmt_decimal,
    focus_row,
    render_csv,
    select_records,
    write_atomic,
)
from exporter.records import BillingRecord, record_id
from tests.kafka.conftest import T0

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
                                            r"period crosses the end of the billing month 2026-12"):
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
    assert row["AllocatedMethodDetails"] == "" and row["x_Allocation"] == "shared-distribution"
    assert row["ChargeDescription"].startswith("CPU share of a shared workload pool charged to")
    direct = focus_row(record())
    assert json.loads(direct["AllocatedMethodDetails"], parse_float=Decimal) == {
        "Elements": [{"AllocatedRatio": 1, "UsageUnit": "Core-Hours", "UsageQuantity": Decimal("0.5")}]}


def test_selection_keeps_the_latest_revision_in_window_and_only_charges() -> None:
    first = record(T0)
    newer = dataclasses.replace(first, revision=2, cost=Decimal("0.020000"))
    stale = dataclasses.replace(first, revision=1, cost=Decimal("9.000000"))
    audit = record(T0, allocation="shared-source")
    outside = record(T0 + 5 * H)
    mem = record(T0, resource="memory", unit="GiB-Hours")
    sel = select_records([first, newer, stale, audit, outside, mem], T0, T0 + 2 * H)
    assert [(r.resource, r.revision, r.cost) for r in sel.records] == [
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
                     records=[record(), dataclasses.replace(unpriced, resource="memory",
                                                            record_id="m" * 32)])
    assert not out.exists()
    summary = export_focus(cfg, T0, T0 + H, out, allow_unpriced=True, provider="Platform",
                           records=[record(), unpriced])
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

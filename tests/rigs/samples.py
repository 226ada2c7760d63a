"""Fixed records for golden bytes, and Hypothesis strategies for valid Avro datums.

The fixed records are the contract's examples: their encodings are committed under `golden/`.
Regenerate them only for a deliberate schema change (a new major version), with
`python -m tests.rigs.samples --write-golden`, and review the diff.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from exporter.avro import load_schema
from exporter.manifests import content_hash
from exporter.periods import Period
from exporter.records import (
    BillingRecord,
    Checkpoint,
    KeyShare,
    PeriodManifest,
    ResourceCapacity,
    ResourceTotal,
    TopOffender,
    manifest_id,
    record_id,
)

GOLDEN = Path(__file__).parent / "golden"

PERIOD = Period(1_793_491_200, 1_793_494_800)  # 2026-11-01T00:00:00Z, one hour

BILLING = BillingRecord(
    record_id=record_id(cluster="prod-eu-1", period=PERIOD, namespace="payments",
                        workload_kind="Deployment", workload_name="checkout-api", resource="cpu",
                        allocation="direct", method="max-request-usage/pod/10s/v1"),
    period_start=1_793_491_200_000,
    period_end=1_793_494_800_000,
    cluster="prod-eu-1",
    namespace="payments",
    workload_kind="Deployment",
    workload_name="checkout-api",
    costcenter="CC-4711",
    businessunit="retail",
    department="__invalid__",
    team="__unallocated__",
    org_label_sources={"team": "unallocated", "costcenter": "workload", "businessunit": "namespace",
                       "department": "workload"},
    invalid_org_values={"department": "Paymnts"},
    labels={"app": "checkout", "tier": "frontend"},
    resource="cpu",
    unit="Core-Hours",
    usage_quantity=Decimal("1.234567891"),
    request_quantity=Decimal("2.000000000"),
    chargeable_quantity=Decimal("2.104166667"),
    unit_price=Decimal("0.0312500000"),
    cost=Decimal("0.065755"),
    currency="EUR",
    price_version="2026-11",
    revision=0,
    method="max-request-usage/pod/10s/v1",
    allocation="direct",
    sample_coverage=Decimal("0.998611"),
    exporter_version="0.1.0",
    generated_at=1_793_495_100_000,
)

MANIFEST = PeriodManifest(
    manifest_id=manifest_id(cluster="prod-eu-1", period=PERIOD),
    period_start=1_793_491_200_000,
    period_end=1_793_494_800_000,
    cluster="prod-eu-1",
    record_count=1,
    totals=(
        ResourceTotal("cpu", "Core-Hours", Decimal("1.234567891"), Decimal("2.000000000"),
                      Decimal("2.104166667"), Decimal("0.065755"), "EUR"),
    ),
    unallocated_share=(
        KeyShare("costcenter", "cpu", Decimal("0.000000"), Decimal("0.000000")),
        KeyShare("team", "cpu", Decimal("1.000000"), Decimal("0.000000")),
        KeyShare("department", "cpu", Decimal("0.000000"), Decimal("1.000000")),
    ),
    top_offenders=(
        TopOffender("payments", "Deployment", "checkout-api", "cpu", Decimal("2.104166667"),
                    ("department", "team")),
    ),
    revision=1,
    content_hash=content_hash([BILLING]),
    sample_coverage=Decimal("0.998611"),
    method="max-request-usage/pod/10s/v1",
    status="final",
    complete=True,
    exporter_version="0.1.0",
    generated_at=1_793_495_100_000,
    capacity=(
        ResourceCapacity("cpu", "Core-Hours", Decimal("3.000000000"), Decimal("2.104166667"),
                         Decimal("0.895833333"), Decimal("0.000000000")),
    ),
)

CHECKPOINT = Checkpoint(
    instance="chargeback-exporter-eu",
    last_period_end=1_793_494_800_000,
    period_seconds=3600,
    updated_at=1_793_495_161_234,
    clusters={"prod-eu-west-01": 1_793_494_800_000, "staging-us-east-02": 1_793_487_600_000},
    claims={"prod-eu-west-01": 1_793_494_800_000},
)

FIXED: dict[str, Any] = {"billing_record": BILLING, "period_manifest": MANIFEST, "checkpoint": CHECKPOINT}


def golden_path(key: str, kind: str) -> Path:
    """`golden/<key>.<kind>.hex`, kind `body` or `single-object`."""
    return GOLDEN / f"{key}.{kind}.hex"


def read_golden(key: str, kind: str) -> bytes:
    return bytes.fromhex(golden_path(key, kind).read_text().strip())


# --------------------------------------------------------------------------------------------
# Strategies: any datum valid under the schema (not only what build_records produces)
# --------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
MAPS = st.dictionaries(TEXT, TEXT, max_size=4)
LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)
# timestamp-millis values a decoder can turn into a datetime (years 1 to 9999).
MILLIS = st.integers(-62_135_596_800_000, 253_402_300_799_999)
AWARE = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.just(UTC))


def decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    """Exact decimals that fit (precision, scale), with 0..scale decimals actually written."""

    @st.composite
    def build(draw: st.DrawFn) -> Decimal:
        written = draw(st.integers(0, scale))
        bound = 10 ** (precision - scale + written) - 1
        # Edge values (0, +-1, +-max) come up often, the rest are uniform.
        n = draw(st.sampled_from([0, 1, -1, bound, -bound]) | st.integers(-bound, bound))
        return Decimal(n).scaleb(-written)

    return build()


def _dec(spec_field: tuple[int, int]) -> st.SearchStrategy[Decimal]:
    return decimals(*spec_field)


@st.composite
def billing_datums(draw: st.DrawFn) -> dict[str, Any]:
    specs = load_schema("billing_record").decimals
    d = {name: draw(_dec((s.precision, s.scale))) for name, s in specs.items()}
    for name in ("unit_price", "cost"):
        d[name] = draw(st.none() | st.just(d[name]))
    for name in ("record_id", "cluster", "namespace", "workload_kind", "workload_name", "costcenter",
                 "businessunit", "department", "team", "resource", "unit", "method", "allocation",
                 "exporter_version"):
        d[name] = draw(TEXT)
    for name in ("currency", "price_version"):
        d[name] = draw(st.none() | TEXT)
    for name in ("org_label_sources", "invalid_org_values", "labels"):
        d[name] = draw(MAPS)
    for name in ("period_start", "period_end", "generated_at"):
        d[name] = draw(MILLIS)
    d["revision"] = draw(INTS)
    return d


@st.composite
def manifest_datums(draw: st.DrawFn) -> dict[str, Any]:
    def q(p: int, s: int) -> Decimal:
        return draw(decimals(p, s))

    totals = [
        {"resource": draw(TEXT), "unit": draw(TEXT), "usage_quantity": q(24, 9),
         "request_quantity": q(24, 9), "chargeable_quantity": q(24, 9),
         "cost": draw(st.none() | decimals(26, 6)), "currency": draw(st.none() | TEXT)}
        for _ in range(draw(st.integers(0, 3)))
    ]
    shares = [
        {"org_key": draw(TEXT), "resource": draw(TEXT), "unallocated_share": q(7, 6),
         "invalid_share": q(7, 6)}
        for _ in range(draw(st.integers(0, 4)))
    ]
    offenders = [
        {"namespace": draw(TEXT), "workload_kind": draw(TEXT), "workload_name": draw(TEXT),
         "resource": draw(TEXT), "chargeable_quantity": q(18, 9),
         "missing_keys": draw(st.lists(TEXT, max_size=4))}
        for _ in range(draw(st.integers(0, 3)))
    ]
    capacity = [
        {"resource": draw(TEXT), "unit": draw(TEXT), "allocatable_quantity": q(24, 9),
         "charged_quantity": q(24, 9), "idle_quantity": q(24, 9), "overcommit_quantity": q(24, 9)}
        for _ in range(draw(st.integers(0, 2)))
    ]
    return {
        "manifest_id": draw(TEXT), "period_start": draw(MILLIS), "period_end": draw(MILLIS),
        "cluster": draw(TEXT), "record_count": draw(INTS), "totals": totals,
        "unallocated_share": shares, "top_offenders": offenders, "revision": draw(INTS),
        "content_hash": draw(TEXT), "sample_coverage": q(7, 6), "method": draw(TEXT),
        "status": draw(TEXT), "complete": draw(st.booleans()), "exporter_version": draw(TEXT),
        "generated_at": draw(MILLIS), "capacity": capacity,
    }


@st.composite
def checkpoint_datums(draw: st.DrawFn) -> dict[str, Any]:
    return {"instance": draw(TEXT), "last_period_end": draw(MILLIS | AWARE),
            "period_seconds": draw(INTS), "updated_at": draw(MILLIS | AWARE),
            "clusters": draw(st.dictionaries(TEXT, MILLIS, max_size=3)),
            "claims": draw(st.dictionaries(TEXT, MILLIS, max_size=3))}


DATUMS = {"billing_record": billing_datums(), "period_manifest": manifest_datums(),
          "checkpoint": checkpoint_datums()}


def _write_golden() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for key, record in FIXED.items():
        schema = load_schema(key)
        body = schema.encode(record.to_avro())
        golden_path(key, "body").write_text(body.hex() + "\n")
        golden_path(key, "single-object").write_text((schema.header + body).hex() + "\n")
        print(f"wrote {key}: {len(body)} bytes")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-golden"]:
        sys.exit("usage: python -m tests.rigs.samples --write-golden")
    _write_golden()

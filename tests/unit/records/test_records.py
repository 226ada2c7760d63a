"""Billing records and manifests: deterministic identity, quantization, totals, content hash."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from exporter.avro import SingleObjectFraming, body_of, load_schema
from exporter.coverage import label_coverage
from exporter.errors import EncodingError
from exporter.manifests import build_manifests, content_hash, coverage_status
from exporter.model import (
    INVALID,
    ORG_KEYS,
    UNALLOCATED,
    ChargeLine,
    LabelCoverage,
    OrgAssignment,
    PricedLine,
    Resource,
    WorkloadKey,
)
from exporter.periods import Period
from exporter.records import (
    BillingRecord,
    Checkpoint,
    PeriodManifest,
    build_records,
    identity_method,
    kubernetes_kind,
    manifest_id,
    record_id,
)

HOUR = Period(1_793_491_200, 1_793_494_800)
METHOD = "max-request-usage/pod/10s/v1"
IDENTITY: dict[str, Any] = dict(cluster="prod", period=HOUR, namespace="shop", workload_kind="Deployment",
                                workload_name="api", resource="cpu", allocation="direct", method=METHOD)


def charge(*, cluster: str = "prod", namespace: str = "shop", kind: str = "deployment", name: str = "api",
           resource: Resource = "cpu", usage: str = "1", request: str = "2", chargeable: str = "2.5",
           org: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
           coverage: str = "0.9986111", allocation: str = "direct", period: Period = HOUR,
           price: str | None = None, currency: str | None = None) -> PricedLine:
    values = {k: (org or {}).get(k, UNALLOCATED) for k in ORG_KEYS}
    sources = {k: "workload" if values[k] != UNALLOCATED else "unallocated" for k in ORG_KEYS}
    original = {k: "bad value" for k in ORG_KEYS if values[k] == INVALID}
    line = ChargeLine(
        period=period, workload=WorkloadKey(cluster, namespace, kind, name), resource=resource,
        usage=Decimal(usage), request=Decimal(request), chargeable=Decimal(chargeable),
        org=OrgAssignment(values=values, sources=sources, original=original),
        labels=dict(labels or {}), coverage=Decimal(coverage), method=METHOD, allocation=allocation,
    )
    unit_price = Decimal(price) if price is not None else None
    cost = line.chargeable * unit_price if unit_price is not None else None
    return PricedLine(line, unit_price, cost, currency, "rc-1" if price else None)


def build(*lines: PricedLine, revision: Any = 0) -> list[BillingRecord]:
    return build_records(lines, revision=revision, generated_at_ms=HOUR.end * 1000 + 300_000,
                         exporter_version="0.1.0")


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


def test_record_id_is_the_documented_sha256_of_the_length_prefixed_identity() -> None:
    """An independent implementation of the algorithm in schemas/README.md."""
    parts = ["chargeback.billing_record.v1", "prod", str(HOUR.start * 1000), str(HOUR.end * 1000), "shop",
             "Deployment", "api", "cpu", "direct", identity_method(METHOD)]
    data = b"".join(len(p.encode()).to_bytes(8, "big") + p.encode() for p in parts)
    expected = hashlib.sha256(data).hexdigest()[:32]
    assert record_id(**IDENTITY) == expected
    assert record_id(**IDENTITY) == record_id(**dict(IDENTITY))


@pytest.mark.parametrize("field,other", [
    ("cluster", "prod2"), ("period", Period(HOUR.start + 3600, HOUR.end + 3600)),
    ("period", Period(HOUR.start, HOUR.end + 3600)), ("namespace", "shop2"),
    ("workload_kind", "StatefulSet"), ("workload_name", "api2"), ("resource", "memory"),
    ("allocation", "shared-distribution"), ("method", "max-request-usage/pod/10s/v2"),
])
def test_record_id_changes_with_every_identity_field(field: str, other: Any) -> None:
    assert record_id(**{**IDENTITY, field: other}) != record_id(**IDENTITY)


def test_record_id_does_not_depend_on_the_sample_step() -> None:
    coarse = METHOD.replace("/10s/", "/600s/")
    assert coarse != METHOD
    assert record_id(**{**IDENTITY, "method": coarse}) == record_id(**IDENTITY)


def test_record_id_cannot_be_confused_by_moving_characters_between_fields() -> None:
    a = record_id(**{**IDENTITY, "namespace": "ab", "workload_name": "c"})
    b = record_id(**{**IDENTITY, "namespace": "a", "workload_name": "bc"})
    assert a != b


def test_record_id_ignores_quantities_prices_org_labels_and_revision() -> None:
    base = build(charge())[0]
    others = [
        build(charge(usage="7", request="8", chargeable="9"))[0],
        build(charge(price="0.5", currency="EUR"))[0],
        build(charge(org={"team": "t1"}, labels={"app": "x"}))[0],
        build(charge(), revision=3)[0],
    ]
    assert {r.record_id for r in others} == {base.record_id}
    assert base.record_id == record_id(**IDENTITY)


def test_manifest_id_depends_on_cluster_and_period_only() -> None:
    m = manifest_id(cluster="prod", period=HOUR)
    assert m == manifest_id(cluster="prod", period=Period(HOUR.start, HOUR.end))
    assert m != manifest_id(cluster="prod2", period=HOUR)
    assert m != manifest_id(cluster="prod", period=Period(HOUR.end, HOUR.end + 3600))
    assert len(m) == 32 and int(m, 16) >= 0


@pytest.mark.parametrize("sysdig,kind", [
    ("deployment", "Deployment"), ("statefulset", "StatefulSet"), ("daemonset", "DaemonSet"),
    ("job", "Job"), ("cronjob", "CronJob"), ("Deployment", "Deployment"), ("DAEMONSET", "DaemonSet"),
    ("rollout", "rollout"), ("", ""),
])
def test_kubernetes_kind_maps_sysdig_types_and_passes_others_through(sysdig: str, kind: str) -> None:
    assert kubernetes_kind(sysdig) == kind


# --------------------------------------------------------------------------------------------
# build_records
# --------------------------------------------------------------------------------------------


def test_build_records_fills_every_field_from_the_priced_line() -> None:
    [r] = build(charge(kind="statefulset", resource="memory", usage="1.00000000049", request="2",
                       chargeable="2.0000000005", org={"costcenter": "CC-1", "team": INVALID},
                       labels={"z": "1", "a": "2"}, price="0.01234567891", currency="EUR"),
                revision=lambda rid: 2)
    assert r.workload_kind == "StatefulSet" and r.unit == "GiB-Hours" and r.resource == "memory"
    assert r.period_start == HOUR.start * 1000 and r.period_end == HOUR.end * 1000
    assert r.generated_at == HOUR.end * 1000 + 300_000 and r.revision == 2
    # Half-even at 9 decimals: ...0049 -> ...0, and a tie ...0005 -> even (0).
    assert r.usage_quantity == Decimal("1.000000000")
    assert r.chargeable_quantity == Decimal("2.000000000")
    assert r.unit_price == Decimal("0.0123456789")  # 10 decimals, ...891 -> ...89
    assert r.cost == Decimal("0.024691")
    assert r.sample_coverage == Decimal("0.998611")
    assert (r.costcenter, r.businessunit, r.department, r.team) == ("CC-1", UNALLOCATED, UNALLOCATED, INVALID)
    assert r.invalid_org_values == {"team": "bad value"}
    assert list(r.labels) == ["a", "z"] and list(r.org_label_sources) == sorted(ORG_KEYS)
    assert r.currency == "EUR" and r.price_version == "rc-1"


def test_unpriced_lines_give_null_price_fields() -> None:
    [r] = build(charge())
    assert (r.unit_price, r.cost, r.currency, r.price_version) == (None, None, None, None)
    schema = load_schema("billing_record")
    assert schema.decode(schema.encode_object(r))["cost"] is None


def test_rebuilding_the_same_lines_gives_byte_identical_payloads() -> None:
    lines = [charge(name=f"w{i}", org={"team": f"t{i % 3}"}, labels={"b": "1", "a": "2"}) for i in range(20)]
    again = [replace(p, line=replace(p.line, labels=dict(reversed(list(p.line.labels.items())))))
             for p in lines]
    schema = load_schema("billing_record")
    first = [schema.encode_object(r) for r in build(*lines)]
    second = [schema.encode_object(r) for r in build(*again)]
    assert first == second and len(set(first)) == 20


@pytest.mark.parametrize("kwargs,message", [
    ({"chargeable": "1000000000"}, "field chargeable_quantity"),
    ({"usage": "-0.5"}, "negative quantity"),
    ({"price": "1", "currency": "eur"}, "ISO 4217"),
    ({"price": "1"}, "needs a currency"),
    ({"allocation": "split"}, "unknown allocation"),
    ({"coverage": "10"}, "field sample_coverage"),
])
def test_build_records_rejects_bad_lines_naming_record_and_field(kwargs: dict[str, str],
                                                                 message: str) -> None:
    with pytest.raises(EncodingError, match=message) as err:
        build(charge(**kwargs))  # type: ignore[arg-type]
    assert record_id(**IDENTITY) in str(err.value) or "allocation" in message
    assert "prod/shop/Deployment/api cpu" in str(err.value)


def test_ids_stay_right_when_workloads_and_periods_interleave() -> None:
    """`build_records` hashes a workload's parts once per run of lines; out-of-order input
    must still give every line the id `record_id` defines."""
    later = Period(HOUR.end, HOUR.end + 3600)
    lines = [charge(), charge(name="web"), charge(resource="memory"), charge(period=later),
             charge(kind="statefulset"), charge(resource="memory", allocation="shared-source"),
             charge(name="web", resource="memory", namespace="shop2")]
    for priced, rec in zip(lines, build(*lines), strict=True):
        ln = priced.line
        assert rec.record_id == record_id(
            cluster=ln.workload.cluster, period=ln.period, namespace=ln.workload.namespace,
            workload_kind=kubernetes_kind(ln.workload.kind), workload_name=ln.workload.name,
            resource=ln.resource, allocation=ln.allocation, method=ln.method)


def test_a_workloads_records_share_their_sorted_immutable_maps() -> None:
    import copy
    import pickle

    labels = {"tier": "web", "app": "shop"}
    first = charge(labels=labels)  # as from `pipeline.charge_lines`: one workload, shared maps
    cpu, mem = build(first, replace(first, line=replace(first.line, resource="memory")))
    assert list(cpu.labels) == ["app", "tier"] and cpu.labels is mem.labels
    assert cpu.org_label_sources is mem.org_label_sources
    with pytest.raises(TypeError, match="immutable"):
        cpu.labels["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError, match="immutable"):
        cpu.labels.update(x="y")  # type: ignore[attr-defined]
    for clone in (pickle.loads(pickle.dumps(cpu)),  # noqa: S301 - our own bytes
                  copy.deepcopy(cpu), replace(cpu, revision=1)):
        assert clone.labels == labels and list(clone.labels) == ["app", "tier"]
    assert load_schema("billing_record").encode_object(replace(cpu, labels=dict(labels))) == \
        load_schema("billing_record").encode_object(cpu)


def test_a_currency_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(EncodingError, match="ISO 4217"):
        build(charge(price="1", currency="EUR\n"))


def test_two_lines_with_one_identity_are_rejected() -> None:
    with pytest.raises(EncodingError, match="same identity"):
        build(charge(), charge(chargeable="3"))


@pytest.mark.parametrize("revision", [-1, 2**31, True, "1"])
def test_bad_revisions_are_rejected(revision: Any) -> None:
    with pytest.raises(EncodingError, match="revision"):
        build(charge(), revision=revision)


def test_records_round_trip_through_the_framing() -> None:
    framing = SingleObjectFraming()
    for r in build(charge(price="0.03", currency="USD"), charge(resource="memory")):
        assert BillingRecord.from_avro(framing.decode(framing.encode_object("t", "billing_record", r))) == r


# --------------------------------------------------------------------------------------------
# build_manifests
# --------------------------------------------------------------------------------------------


def _manifests(lines: list[PricedLine], **kwargs: Any) -> tuple[list[BillingRecord], list[PeriodManifest]]:
    records = build(*lines)
    coverage = label_coverage([p.line for p in lines])
    options: dict[str, Any] = dict(period=HOUR, method=METHOD, revision=0, generated_at_ms=1,
                                   exporter_version="0.1.0")
    options.update(kwargs)
    sample = options.pop("sample_coverage", {c: Decimal("0.99") for c in coverage})
    return records, build_manifests(records, coverage, sample, **options)


def test_manifest_totals_are_exact_sums_of_the_quantized_records() -> None:
    lines = [charge(name=f"w{i}", chargeable=f"0.{i}000000005", usage="0.1", request="0.3333333333",
                    price="0.1", currency="EUR") for i in range(1, 8)]
    lines.append(charge(name="m", resource="memory", chargeable="4", price="0.2", currency="EUR"))
    records, [m] = _manifests(lines)
    cpu = [r for r in records if r.resource == "cpu"]
    assert m.record_count == 8 and [t.resource for t in m.totals] == ["cpu", "memory"]
    total = m.totals[0]
    assert total.chargeable_quantity == sum((r.chargeable_quantity for r in cpu), Decimal(0))
    # The sum of what consumers received (7 x 0.333333333), not 7/3 rounded: totals reconcile.
    assert total.request_quantity == Decimal("2.333333331")
    assert total.cost == sum((r.cost for r in cpu if r.cost is not None), Decimal(0))
    assert total.currency == "EUR" and total.unit == "Core-Hours" and m.totals[1].unit == "GiB-Hours"


def test_manifest_content_hash_can_be_recomputed_by_a_consumer_from_framed_values() -> None:
    lines = [charge(name=f"w{i}", org={"team": "t"} if i % 2 else None) for i in range(6)]
    records, [m] = _manifests(lines)
    framing = SingleObjectFraming()
    values = [framing.encode_object("records", "billing_record", r) for r in reversed(records)]
    # Consumer side: decode ids, sort by record_id, hash the bodies with their lengths.
    by_id = sorted(values, key=lambda v: framing.decode(v)["record_id"])
    h = hashlib.sha256()
    for v in by_id:
        h.update(len(body_of(v)).to_bytes(8, "big") + body_of(v))
    assert m.content_hash == h.hexdigest() == content_hash(records)
    assert m.manifest_id == manifest_id(cluster="prod", period=HOUR)


def test_manifest_hash_changes_when_any_record_changes() -> None:
    _, [a] = _manifests([charge(name="a"), charge(name="b")])
    _, [b] = _manifests([charge(name="a"), charge(name="b", chargeable="2.500000001")])
    _, [c] = _manifests([charge(name="a")])
    assert len({a.content_hash, b.content_hash, c.content_hash}) == 3


def test_manifest_hash_covers_the_records_as_published_revision_included() -> None:
    """docs/backfill.md, schemas/README.md: the hash is over the published bodies, which carry
    the revision, so a backfill compares at the published revision, not at revision 0."""
    lines = [charge(name="a"), charge(name="b")]
    records, [first] = _manifests(lines)
    revised = [dataclasses.replace(r, revision=1) for r in records]
    coverage = label_coverage([p.line for p in lines])
    [second] = build_manifests(revised, coverage, {"prod": Decimal("0.99")}, period=HOUR, method=METHOD,
                               revision=1, generated_at_ms=1, exporter_version="0.1.0")
    assert second.content_hash == content_hash(revised) != first.content_hash == content_hash(records)


def test_manifest_carries_label_coverage_and_top_offenders() -> None:
    lines = [charge(name="labelled", chargeable="3", org=dict.fromkeys(ORG_KEYS, "x")),
             charge(name="bare", chargeable="1")]
    _, [m] = _manifests(lines)
    cpu_team = next(s for s in m.unallocated_share if s.org_key == "team" and s.resource == "cpu")
    assert cpu_team.unallocated_share == Decimal("0.250000") and cpu_team.invalid_share == 0
    assert [(o.workload_name, o.workload_kind, o.missing_keys) for o in m.top_offenders] == [
        ("bare", "Deployment", tuple(ORG_KEYS))]


def test_one_manifest_per_cluster_including_clusters_without_records() -> None:
    sample = {"a": Decimal("1"), "b": Decimal("0.5"), "c": Decimal("1")}
    _, manifests = _manifests([charge(cluster="b"), charge(cluster="a")], sample_coverage=sample)
    assert [m.cluster for m in manifests] == ["a", "b", "c"]
    empty = manifests[2]
    assert empty.record_count == 0 and empty.totals == () and empty.unallocated_share == ()
    assert empty.content_hash == hashlib.sha256(b"").hexdigest()
    assert manifests[1].sample_coverage == Decimal("0.500000")


def test_status_follows_the_coverage_rule_and_sets_complete() -> None:
    sample = {"a": Decimal("0.99"), "b": Decimal("0.5")}
    _, manifests = _manifests([charge(cluster="a"), charge(cluster="b")], sample_coverage=sample,
                              status=lambda c: coverage_status(sample[c], Decimal("0.95")))
    assert [(m.status, m.complete) for m in manifests] == [("final", True), ("low-coverage", False)]


@pytest.mark.parametrize("lines,kwargs,message", [
    ([charge(name="a", price="1", currency="EUR"), charge(name="b", price="1", currency="USD")], {},
     "mixes currencies"),
    ([charge(name="a", price="1", currency="EUR"), charge(name="b")], {}, "mixes priced and unpriced"),
    ([charge()], {"status": "draft"}, "unknown status"),
    ([charge()], {"period": Period(HOUR.end, HOUR.end + 3600)}, "is not"),
])
def test_manifest_errors_are_one_line(lines: list[PricedLine], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(EncodingError, match=message) as err:
        _manifests(lines, **kwargs)
    assert "\n" not in str(err.value)


def test_without_sample_coverage_the_records_own_coverage_is_used() -> None:
    _, [m] = _manifests([charge(coverage="0.97"), charge(name="b", coverage="0.99")], sample_coverage={})
    assert m.sample_coverage == Decimal("0.970000")


def test_a_cluster_without_records_or_sample_coverage_is_an_error() -> None:
    with pytest.raises(EncodingError, match="no sample coverage"):
        build_manifests([], {"idle": LabelCoverage("idle", (), ())}, {}, period=HOUR, method=METHOD,
                        revision=0, generated_at_ms=0, exporter_version="0.1.0")


def test_a_cluster_with_records_needs_label_coverage() -> None:
    records = build(charge())
    with pytest.raises(EncodingError, match="no label coverage"):
        build_manifests(records, {}, {"prod": Decimal(1)}, period=HOUR, method=METHOD, revision=0,
                        generated_at_ms=0, exporter_version="0.1.0")


def test_manifest_and_checkpoint_round_trip_through_the_framing() -> None:
    _, [m] = _manifests([charge(price="0.5", currency="EUR"), charge(resource="memory", org={"team": "t"})])
    framing = SingleObjectFraming()
    assert PeriodManifest.from_avro(framing.decode(framing.encode_object("m", "period_manifest", m))) == m
    cp = Checkpoint("exporter-1", HOUR.end * 1000, 3600, 1_793_494_861_000)
    assert Checkpoint.from_avro(framing.decode(framing.encode("c", "checkpoint", cp.to_avro()))) == cp

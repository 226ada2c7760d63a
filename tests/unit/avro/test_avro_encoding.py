"""The Avro contract: golden bytes, the encoder against fastavro (the oracle), decoders, decimals,
fingerprints and the single-object framing."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.avro import (
    SCHEMA_FILES,
    SchemaSet,
    SingleObjectFraming,
    body_of,
    build_schema,
    fingerprint,
    load_schema,
)
from exporter.avro.encoder import record_writer
from exporter.errors import EncodingError
from exporter.money import DecimalSpec, quantize
from exporter.records import BillingRecord, Checkpoint, FrozenMap, PeriodManifest, SortedMap
from tests.rigs.paths import ROOT
from tests.rigs.samples import BILLING, CHECKPOINT, DATUMS, FIXED, MANIFEST, decimals, read_golden

KEYS = sorted(SCHEMA_FILES)
FROM_AVRO = {"billing_record": BillingRecord, "period_manifest": PeriodManifest, "checkpoint": Checkpoint}


def fastavro_encode(schema: Any, datum: Any) -> bytes:
    """The oracle: fastavro's `schemaless_writer` for the same schema and datum."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema.parsed, datum)
    return buf.getvalue()


def _normalised(value: Any) -> Any:
    """Comparable form: decoders give aware datetimes for timestamp-millis (compare as epoch
    milliseconds) and decimals at the schema's scale (compare by value)."""
    if isinstance(value, datetime):
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(value, Decimal):
        return ("decimal", value.normalize())
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Golden bytes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_fixed_record_encodes_to_the_committed_golden_bytes(key: str) -> None:
    schema = load_schema(key)
    record = FIXED[key]
    golden = read_golden(key, "body")
    assert schema.encode(record.to_avro()) == golden
    assert schema.encode_object(record) == golden
    # The golden bytes are fastavro's too, so they are not just our encoder's opinion.
    assert fastavro_encode(schema, record.to_avro()) == golden
    framed = SingleObjectFraming().encode("any-topic", key, record.to_avro())
    assert framed == read_golden(key, "single-object")


@pytest.mark.parametrize("key", KEYS)
def test_golden_bytes_decode_to_the_fixed_record_with_fastavro(key: str) -> None:
    schema = load_schema(key)
    decoded = fastavro.schemaless_reader(io.BytesIO(read_golden(key, "body")), fastavro.parse_schema(
        json.loads(schema.text)))
    assert FROM_AVRO[key].from_avro(decoded) == FIXED[key]


@pytest.mark.parametrize("key", KEYS)
def test_golden_bytes_decode_to_the_fixed_record_with_the_reference_avro_package(key: str) -> None:
    reader = avro.io.DatumReader(avro.schema.parse(load_schema(key).text))
    decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(read_golden(key, "body"))))
    assert FROM_AVRO[key].from_avro(decoded) == FIXED[key]


def test_golden_billing_record_has_the_documented_layout() -> None:
    """Spot-check the bytes by hand: the id is a 32-char string, then two zig-zag longs."""
    body = read_golden("billing_record", "body")
    assert body[0] == 64  # zig-zag 32: the length of record_id
    assert body[1:33].decode() == BILLING.record_id
    # period_start 1_793_491_200_000 ms: zig-zag doubles it, varint little-endian groups of 7.
    n, shift, i = 0, 0, 33
    while True:
        n |= (body[i] & 0x7F) << shift
        shift += 7
        i += 1
        if body[i - 1] < 0x80:
            break
    assert n // 2 == BILLING.period_start


# --------------------------------------------------------------------------------------------
# The encoder is byte-for-byte fastavro
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_encoder_matches_fastavro_on_random_datums(key: str, data: st.DataObject) -> None:
    schema = load_schema(key)
    datum = data.draw(DATUMS[key])
    ours = schema.encode(datum)
    assert ours == fastavro_encode(schema, datum)
    decoded = schema.decode(ours)
    assert _normalised(decoded) == _normalised(datum)


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_batch_writer_matches_fastavro_on_every_datum_of_a_batch(
        key: str, data: st.DataObject) -> None:
    """A batch's writer reuses the bytes of equal values: each body is still fastavro's."""
    schema = load_schema(key)
    batch = data.draw(st.lists(DATUMS[key], min_size=2, max_size=6))
    encode = schema.encoder(attr=False)
    for datum in [*batch, *batch]:  # twice: the second round is written from the memo
        assert encode(datum) == fastavro_encode(schema, datum)


def test_the_batch_memo_keys_on_exact_types() -> None:
    """Equal values of another type never take a memoised value's bytes: 1 == Decimal(1) ==
    True, yet only the Decimal fits a decimal field and only the int a long field."""
    schema = load_schema("billing_record")
    encode = schema.encoder(attr=False)
    datum = BILLING.to_avro()
    encode({**datum, "usage_quantity": Decimal(1), "period_start": 1})
    with pytest.raises(EncodingError, match="usage_quantity"):
        encode({**datum, "usage_quantity": 1})
    with pytest.raises(EncodingError, match="period_start"):
        encode({**datum, "period_start": True})
    with pytest.raises(EncodingError, match="usage_quantity"):
        encode({**datum, "usage_quantity": Decimal("1.0000000001")})


def test_the_batch_memo_refuses_a_float_equal_to_a_memoised_decimal() -> None:
    """0.5 == Decimal("0.5"): the float still meets the decimal writer, which refuses it."""
    encode = load_schema("billing_record").encoder(attr=False)
    datum = BILLING.to_avro()
    encode({**datum, "cost": Decimal("0.5")})
    with pytest.raises(EncodingError, match="cost"):
        encode({**datum, "cost": 0.5})


@settings(max_examples=40, deadline=None)
@given(datums=st.lists(DATUMS["billing_record"], min_size=2, max_size=6))
def test_one_batch_writer_follows_a_map_changed_between_two_records(
        datums: list[dict[str, Any]]) -> None:
    """Maps are kept by their items, not by the dict object: one writer, one dict changed
    between records, each body still fastavro's."""
    schema = load_schema("billing_record")
    encode = schema.encoder(attr=False)
    labels = dict(datums[0]["labels"])
    for i, datum in enumerate(datums):
        labels[f"k{i}"] = str(i)
        datum = {**datum, "labels": labels}
        assert encode(datum) == fastavro_encode(schema, {**datum, "labels": dict(labels)})


def test_a_record_of_one_scalar_field_and_a_record_of_none_match_fastavro() -> None:
    one = {"type": "record", "name": "One", "fields": [
        {"name": "n", "type": "long"}, {"name": "m", "type": {"type": "map", "values": "long"}}]}
    none = {"type": "record", "name": "None_", "fields": [
        {"name": "m", "type": {"type": "map", "values": "string"}}]}
    for schema, datums in ((one, [{"n": 3, "m": {"a": 1}}, {"n": 3, "m": {}}, {"n": -9, "m": {}}]),
                           (none, [{"m": {"a": "b"}}, {"m": {"a": "b"}}, {"m": {}}])):
        write = record_writer(schema, attr=False)
        parsed = fastavro.parse_schema(schema)
        for datum in datums:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed, datum)
            assert write(datum) == out.getvalue()


@settings(max_examples=60, deadline=None)
@given(datum=DATUMS["billing_record"])
def test_encode_object_matches_encode_of_the_dict(datum: dict[str, Any]) -> None:
    schema = load_schema("billing_record")
    record = BillingRecord(**datum)
    assert schema.encode_object(record) == schema.encode(record.to_avro())


@settings(max_examples=60, deadline=None)
@given(datum=DATUMS["billing_record"])
def test_reference_avro_package_decodes_what_we_encode(datum: dict[str, Any]) -> None:
    schema = load_schema("billing_record")
    reader = avro.io.DatumReader(avro.schema.parse(schema.text))
    decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(schema.encode(datum))))
    assert _normalised(decoded) == _normalised(datum)


def test_same_record_always_gives_the_same_bytes_whatever_the_map_order() -> None:
    schema = load_schema("billing_record")
    shuffled = BillingRecord(**{**BILLING.to_avro(),
                                "labels": dict(reversed(list(BILLING.labels.items())))})
    assert schema.encode_object(shuffled) == schema.encode_object(BILLING)


@settings(max_examples=40, deadline=None)
@given(datums=st.lists(DATUMS["billing_record"], min_size=2, max_size=6))
def test_reused_bytes_never_outlive_a_change(datums: list[dict[str, Any]]) -> None:
    """The encoder reuses the bytes of the last FrozenMap and of the last two decimals it
    wrote: a sequence mixing shared maps, mutated plain dicts and alternating decimals must
    encode exactly as fastavro encodes each datum on its own."""
    schema = load_schema("billing_record")
    shared = SortedMap(sorted(datums[0]["labels"].items()))  # a FrozenMap, kept by records
    plain = dict(datums[0]["labels"])
    price_a, price_b = datums[0]["unit_price"], datums[1]["unit_price"]
    for i, datum in enumerate(datums):
        plain[f"k{i}"] = str(i)  # the same dict object, changed between two encodings
        datum = {**datum, "labels": shared if i % 2 else plain,
                 "unit_price": price_a if i % 2 else price_b}
        expected = fastavro_encode(schema, {**datum, "labels": dict(datum["labels"])})
        assert schema.encode(datum) == expected
        record = BillingRecord(**datum)  # sorts a plain dict into a new SortedMap
        assert schema.encode_object(record) == fastavro_encode(
            schema, {**record.to_avro(), "labels": dict(record.labels)})


def test_a_frozen_map_refuses_changes_and_survives_copies() -> None:
    import copy
    import pickle

    m = FrozenMap({"a": "1"})
    for change in (lambda: m.__setitem__("b", "2"), lambda: m.update(b="2"), lambda: m.pop("a"),
                   lambda: m.clear(), lambda: m.setdefault("b", "2"), lambda: m.__delitem__("a")):
        with pytest.raises(TypeError, match="immutable"):
            change()
    assert m == {"a": "1"}
    for clone in (copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m))):  # noqa: S301
        assert type(clone) is FrozenMap and clone == m


@pytest.mark.parametrize("value", [-(2**63), 2**63 - 1, -(2**31), 2**31, 8191, 8192, -8193])
def test_extreme_longs_match_fastavro(value: int) -> None:
    schema = load_schema("billing_record")
    datum = {**BILLING.to_avro(), "period_start": value, "generated_at": value}
    assert schema.encode(datum) == fastavro_encode(schema, datum)


def test_longs_beyond_64_bits_are_rejected() -> None:
    with pytest.raises(EncodingError, match="does not fit an Avro long"):
        load_schema("billing_record").encode({**BILLING.to_avro(), "period_end": 2**63})


def test_strings_longer_than_the_length_table_and_big_maps_match_fastavro() -> None:
    schema = load_schema("billing_record")
    datum = BILLING.to_avro()
    datum["workload_name"] = "w" * 70_000
    datum["labels"] = {f"k{i}": "é" * (i % 7) for i in range(20_000)}
    assert schema.encode(datum) == fastavro_encode(schema, datum)


# --------------------------------------------------------------------------------------------
# Decimals
# --------------------------------------------------------------------------------------------

Q = DecimalSpec(18, 9)


@pytest.mark.parametrize("value", [
    Decimal("999999999.999999999"),   # max
    Decimal("-999999999.999999999"),  # min
    Decimal("0"),
    Decimal("-0.000000001"),
    Decimal("0.000000001"),
    Decimal("-1"),
    Decimal("-128E-9"),               # the two's-complement edges fastavro sizes by magnitude
    Decimal("128E-9"),
    Decimal("-32768E-9"),
])
def test_decimal_edge_values_round_trip_through_the_real_schema(value: Decimal) -> None:
    schema = load_schema("billing_record")
    datum = {**BILLING.to_avro(), "usage_quantity": value}
    body = schema.encode(datum)
    assert body == fastavro_encode(schema, datum)
    assert schema.decode(body)["usage_quantity"] == value
    reader = avro.io.DatumReader(avro.schema.parse(schema.text))
    assert reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))["usage_quantity"] == value


def test_one_digit_too_many_is_an_encoding_error_naming_record_and_field() -> None:
    schema = load_schema("billing_record")
    datum = {**BILLING.to_avro(), "chargeable_quantity": Decimal("1000000000.000000000")}
    with pytest.raises(EncodingError) as err:
        schema.encode(datum)
    message = str(err.value)
    assert BILLING.record_id in message and "'chargeable_quantity'" in message
    assert "18 digits" in message and "\n" not in message


def test_precision_is_checked_even_where_fastavro_accepts_the_value() -> None:
    """fastavro counts the digits before rescaling: 14 digits pass under precision 18 although
    the value needs 22 at scale 9."""
    schema = load_schema("billing_record")
    datum = {**BILLING.to_avro(), "usage_quantity": Decimal("1234567890123.5")}
    fastavro_encode(schema, datum)  # no error: the library is not a validator
    with pytest.raises(EncodingError, match="usage_quantity"):
        schema.encode(datum)


def test_more_decimals_than_the_scale_are_an_error_at_encoding_and_rounded_by_quantize() -> None:
    schema = load_schema("billing_record")
    with pytest.raises(EncodingError, match="more than 9 decimals"):
        schema.encode({**BILLING.to_avro(), "usage_quantity": Decimal("0.0000000005")})
    assert quantize(Decimal("0.0000000005"), Q, "x") == Decimal("0E-9")  # half-even: to 0
    assert quantize(Decimal("0.0000000015"), Q, "x") == Decimal("0.000000002")
    assert quantize(Decimal("0.0000000025"), Q, "x") == Decimal("0.000000002")
    assert quantize(Decimal("-0.0000000025"), Q, "x") == Decimal("-0.000000002")


def test_quantize_checks_precision_after_rounding() -> None:
    assert quantize(Decimal("999999999.9999999994"), Q, "x") == Q.max_value
    with pytest.raises(EncodingError, match="more than 18 digits"):
        quantize(Decimal("999999999.9999999995"), Q, "usage of x")
    with pytest.raises(EncodingError, match="finite"):
        quantize(Decimal("NaN"), Q, "x")
    with pytest.raises(EncodingError, match="finite"):
        quantize(1.5, Q, "x")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), spec=st.sampled_from([Q, DecimalSpec(22, 10), DecimalSpec(20, 6), DecimalSpec(7, 6)]))
def test_quantize_is_exact_on_values_that_already_fit(data: st.DataObject, spec: DecimalSpec) -> None:
    value = data.draw(decimals(spec.precision, spec.scale))
    rounded = quantize(value, spec, "x")
    assert rounded == value and rounded.as_tuple().exponent == -spec.scale


@pytest.mark.parametrize("field,value,reason", [
    ("usage_quantity", 1.5, "expected Decimal"),
    ("cluster", 7, "expected string"),
    ("revision", 2**31, "does not fit"),
    ("period_start", "yesterday", "expected int"),
    ("period_start", datetime(2026, 11, 1), "naive datetime"),
    ("labels", {"a": 1}, "expected string"),
    ("currency", b"EUR", "expected string"),
])
def test_wrong_values_name_the_field(field: str, value: Any, reason: str) -> None:
    with pytest.raises(EncodingError) as err:
        load_schema("billing_record").encode({**BILLING.to_avro(), field: value})
    assert f"'{field}'" in str(err.value) and reason in str(err.value)


def test_a_missing_field_is_named() -> None:
    datum = BILLING.to_avro()
    del datum["unit"]
    with pytest.raises(EncodingError, match="field 'unit' is missing"):
        load_schema("billing_record").encode(datum)


def test_a_missing_nullable_field_encodes_as_its_default_like_fastavro() -> None:
    schema = load_schema("billing_record")
    datum = BILLING.to_avro()
    del datum["price_version"]
    assert schema.encode(datum) == fastavro_encode(schema, datum)
    assert schema.decode(schema.encode(datum))["price_version"] is None


def test_aware_datetimes_encode_like_their_epoch_milliseconds() -> None:
    schema = load_schema("checkpoint")
    when = datetime(2026, 11, 1, 1, 0, 0, 123456, tzinfo=UTC)
    as_dt = schema.encode({**CHECKPOINT.to_avro(), "updated_at": when})
    assert as_dt == schema.encode({**CHECKPOINT.to_avro(), "updated_at": 1_793_494_800_123})
    assert as_dt == fastavro_encode(schema, {**CHECKPOINT.to_avro(), "updated_at": when})


# --------------------------------------------------------------------------------------------
# Canonical form, fingerprints, single-object encoding
# --------------------------------------------------------------------------------------------

# CRC-64-AVRO vectors from the Apache Avro test suite (hex of the 8 little-endian bytes).
SPEC_VECTORS = [
    ('"int"', "8f5c393f1ad57572"),
    ('{"type": "int"}', "8f5c393f1ad57572"),
    ('"string"', "c70345637248018f"),
    ('"null"', "8a8f25cce724dd63"),
    ('{"type": "fixed", "name": "Test", "size": 1}', "6869897b4049355b"),
    ('{"type": "fixed", "name": "MyFixed", "namespace": "org.apache.hadoop.avro", "size": 1}',
     "fadbd138e85bdf45"),
    ('{"type": "enum", "name": "Test", "symbols": ["A", "B"]}', "03a2f2c2e27f7a16"),
    ('{"type": "map", "values": "long"}', "6f74f4e409b1334e"),
    ('["string", "null", "long"]', "65a5be410d687566"),
    ('{"type": "record", "name": "Test", "fields": [{"name": "f", "type": "long"}]}', "ed94e5f5e6eb588e"),
    ('{"type": "record", "name": "Node", "fields": [{"name": "label", "type": "string"}, '
     '{"name": "children", "type": {"type": "array", "items": "Node"}}]}', "52cba544c3e756b7"),
]


@pytest.mark.parametrize("text,expected", SPEC_VECTORS)
def test_fingerprint_matches_the_avro_spec_vectors(text: str, expected: str) -> None:
    fp = fingerprint(json.loads(text))
    assert fp.to_bytes(8, "little").hex() == expected
    assert avro.schema.parse(text).fingerprint("CRC-64-AVRO").hex() == expected


@pytest.mark.parametrize("key", KEYS)
def test_canonical_form_and_fingerprint_agree_with_fastavro(key: str) -> None:
    schema = load_schema(key)
    assert schema.canonical == to_parsing_canonical_form(json.loads(schema.text))
    # fastavro gives the fingerprint as the hex of its 8 little-endian bytes, as the header has it.
    assert fastavro_fingerprint(schema.canonical, "CRC-64-AVRO") == schema.header[2:].hex()
    # Docs, defaults and logical types are not part of the canonical form.
    assert "doc" not in schema.canonical and "decimal" not in schema.canonical
    assert "io.github.chargeback" in schema.canonical


def test_reference_avro_canonical_form_differs_only_by_keeping_logical_primitives_wrapped() -> None:
    """avro 1.12 writes {"type":"long"} for a logical long where the spec (and fastavro, Java)
    write "long"; that is why our single-object fingerprints are cross-checked with fastavro."""
    schema = load_schema("checkpoint")
    theirs = avro.schema.parse(schema.text).canonical_form
    assert theirs != schema.canonical
    assert theirs.replace('{"type":"long"}', '"long"') == schema.canonical


@pytest.mark.parametrize("key", KEYS)
def test_single_object_value_decodes_with_fastavro_after_stripping_the_header(key: str) -> None:
    schema = load_schema(key)
    framed = SingleObjectFraming().encode("t", key, FIXED[key].to_avro())
    assert framed[:2] == b"\xc3\x01"
    assert int.from_bytes(framed[2:10], "little") == fingerprint(json.loads(schema.text))
    parsed = fastavro.parse_schema(json.loads(schema.text))
    decoded = fastavro.schemaless_reader(io.BytesIO(framed[10:]), parsed)
    assert FROM_AVRO[key].from_avro(decoded) == FIXED[key]
    assert body_of(framed) == framed[10:]


def test_single_object_decode_resolves_the_fingerprint_and_reads_with_the_current_schema() -> None:
    framing = SingleObjectFraming()
    framed = framing.encode_object("t", "period_manifest", MANIFEST)
    assert framing.schema_of(framed) == "io.github.chargeback.billing.v1.PeriodManifest"
    assert PeriodManifest.from_avro(framing.decode(framed)) == MANIFEST


def test_single_object_decode_of_an_older_writer_schema_uses_schema_resolution() -> None:
    """A v1.0 writer without a later-added optional field still decodes with the current one."""
    current = json.loads(load_schema("checkpoint").text)
    older = {**current, "fields": [f for f in current["fields"] if f["name"] != "updated_at"]}
    newer = {**current, "fields": [*current["fields"],
                                   {"name": "note", "type": ["null", "string"], "default": None, "doc": "x"}]}
    old_schema = build_schema("checkpoint-old", json.dumps(older))
    new_schema = build_schema("checkpoint", json.dumps(newer))
    schemas = SchemaSet([new_schema])
    schemas.add(old_schema)
    framing = SingleObjectFraming(schemas)
    old_value = old_schema.header + old_schema.encode({"instance": "a", "last_period_end": 0,
                                                       "period_seconds": 3600})
    with pytest.raises(EncodingError, match="updated_at"):
        framing.decode(old_value)  # the new reader has no default for the removed field
    later = older | {"fields": [*older["fields"], {"name": "updated_at", "type": "long", "default": 0,
                                                   "doc": "x"}]}
    reader = build_schema("checkpoint", json.dumps(later))
    resolving = SchemaSet([reader])
    resolving.add(old_schema)
    assert SingleObjectFraming(resolving).decode(old_value) == {
        "instance": "a", "last_period_end": datetime(1970, 1, 1, tzinfo=UTC), "period_seconds": 3600,
        "updated_at": 0, "clusters": {}, "claims": {}}


@pytest.mark.parametrize("data,reason", [
    (b"", "no C3 01 marker"),
    (b"\x00\x00\x00\x00\x01abc", "no C3 01 marker"),
    (b"\xc3\x01" + (12345).to_bytes(8, "little") + b"\x00", "unknown schema fingerprint"),
])
def test_single_object_decode_rejects_foreign_bytes_in_one_line(data: bytes, reason: str) -> None:
    with pytest.raises(EncodingError, match=reason):
        SingleObjectFraming().decode(data)


def test_truncated_body_is_an_encoding_error() -> None:
    framed = SingleObjectFraming().encode_object("t", "billing_record", BILLING)
    with pytest.raises(EncodingError, match="cannot decode"):
        SingleObjectFraming().decode(framed[:40])


def test_schemas_are_found_through_the_package_not_the_working_directory(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import resources
    monkeypatch.chdir(tmp_path)
    for name in SCHEMA_FILES.values():
        assert (resources.files("exporter") / "schemas" / name).is_file()


def test_a_bad_value_inside_a_nested_record_names_the_top_level_field() -> None:
    bad_total = replace(MANIFEST.totals[0], cost=0.5)  # type: ignore[arg-type]
    with pytest.raises(EncodingError) as err:
        load_schema("period_manifest").encode_object(replace(MANIFEST, totals=(bad_total,)))
    assert MANIFEST.manifest_id in str(err.value) and "'totals'" in str(err.value)
    assert "expected Decimal" in str(err.value)


def test_a_checkpoint_written_before_clusters_existed_reads_with_no_clusters() -> None:
    """Upgrading keeps the checkpoint: the released v1.0 writer decodes, `clusters` = {}."""
    released = (ROOT / "schemas" / "released" / "checkpoint.v1.avsc")
    old_schema = build_schema("checkpoint-old", released.read_text())
    schemas = SchemaSet([load_schema("checkpoint")])
    schemas.add(old_schema)
    old_value = old_schema.header + old_schema.encode(
        {"instance": "a", "last_period_end": 3_600_000, "period_seconds": 3600, "updated_at": 1})
    cp = Checkpoint.from_avro(SingleObjectFraming(schemas).decode(old_value))
    assert (cp.last_period_end, cp.clusters) == (3_600_000, {})

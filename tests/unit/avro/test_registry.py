"""The Confluent framing against a real `SchemaRegistryClient` talking HTTP to the registry fake,
and the fake's own REST semantics (ids, versions, compatibility, errors, auth)."""

from __future__ import annotations

import io
import json
import socket
import threading

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import SecretStr

from exporter.avro import body_of, load_schema
from exporter.avro.registry import ConfluentFraming, redact_url, registry_client
from exporter.config import SchemaRegistryConfig
from exporter.errors import ConfigError, EncodingError, SinkError, SinkUnavailable
from exporter.records import BillingRecord, PeriodManifest
from tests.fakes.schema_registry import FakeSchemaRegistry
from tests.rigs.samples import BILLING, MANIFEST
from tests.unit.avro.conftest import SUBJECT, TOPIC


def _schema(key: str = "billing_record") -> Schema:
    return Schema(load_schema(key).text, "AVRO")


def _without(field: str) -> str:
    doc = json.loads(load_schema("billing_record").text)
    doc["fields"] = [f for f in doc["fields"] if f["name"] != field]
    return json.dumps(doc)


def _retyped(field: str, avro_type: str) -> str:
    doc = json.loads(load_schema("billing_record").text)
    next(f for f in doc["fields"] if f["name"] == field)["type"] = avro_type
    return json.dumps(doc)


def _with_required(field: str) -> str:
    doc = json.loads(load_schema("billing_record").text)
    doc["fields"].append({"name": field, "type": "string", "doc": "x"})
    return json.dumps(doc)


# --------------------------------------------------------------------------------------------
# The fake behaves like the registry for the real client
# --------------------------------------------------------------------------------------------


def test_register_lookup_and_fetch_by_id(client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema(SUBJECT, _schema())
    assert client.register_schema(SUBJECT, _schema()) == schema_id  # no new version
    assert client.get_versions(SUBJECT) == [1]
    latest = client.get_latest_version(SUBJECT)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, SUBJECT)
    fetched = client.get_schema(schema_id).schema_str
    assert json.loads(fetched) == json.loads(load_schema("billing_record").text)
    assert client.lookup_schema(SUBJECT, _schema()).schema_id == schema_id
    assert client.get_subjects() == [SUBJECT]


def test_ids_are_global_across_subjects(client: SchemaRegistryClient) -> None:
    a = client.register_schema("a-value", _schema())
    b = client.register_schema("b-value", _schema())
    m = client.register_schema("m-value", _schema("period_manifest"))
    assert a == b != m


@pytest.mark.parametrize("call,code", [
    (lambda c: c.get_versions("missing-value"), 40401),
    (lambda c: c.lookup_schema("missing-value", _schema()), 40401),
    (lambda c: c.get_schema(999), 40403),
    (lambda c: c.get_version(SUBJECT, 7), 40402),
    (lambda c: c.lookup_schema(SUBJECT, _schema("checkpoint")), 40403),
])
def test_not_found_answers_carry_the_registry_error_codes(client: SchemaRegistryClient, call: object,
                                                          code: int) -> None:
    client.register_schema(SUBJECT, _schema())
    with pytest.raises(SchemaRegistryError) as err:
        call(client)  # type: ignore[operator]
    assert err.value.http_status_code == 404 and err.value.error_code == code


def test_incompatible_register_is_409_under_backward_and_accepted_under_none(
        client: SchemaRegistryClient) -> None:
    first = client.register_schema(SUBJECT, _schema())
    assert client.get_compatibility() == "BACKWARD"
    bad = Schema(_with_required("zone"), "AVRO")
    assert client.test_compatibility(SUBJECT, bad) is False
    assert client.test_compatibility(SUBJECT, Schema(_without("price_version"), "AVRO")) is True
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(SUBJECT, bad)
    assert err.value.http_status_code == 409
    client.set_compatibility(SUBJECT, "NONE")
    assert client.get_compatibility(SUBJECT) == "NONE"
    assert client.register_schema(SUBJECT, bad) != first
    assert client.get_versions(SUBJECT) == [1, 2]


def test_transitive_level_checks_all_versions(client: SchemaRegistryClient) -> None:
    client.set_compatibility(SUBJECT, "BACKWARD_TRANSITIVE")
    client.register_schema(SUBJECT, _schema())
    client.register_schema(SUBJECT, Schema(_without("price_version"), "AVRO"))
    retyped = json.loads(_without("price_version"))
    retyped["fields"].append({"name": "price_version", "type": "long", "default": 0, "doc": "x"})
    candidate = Schema(json.dumps(retyped), "AVRO")
    assert client.test_compatibility(SUBJECT, candidate) is True  # against latest only
    assert client.test_compatibility_all_versions(SUBJECT, candidate) is False
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(SUBJECT, candidate)
    assert err.value.http_status_code == 409


def test_invalid_schema_and_level_are_422(client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(SUBJECT, Schema('{"type": "record", "name": "X"}', "AVRO"))
    assert (err.value.http_status_code, err.value.error_code) == (422, 42201)
    with pytest.raises(SchemaRegistryError) as err:
        client.set_compatibility(level="SOMETIMES")
    assert (err.value.http_status_code, err.value.error_code) == (422, 42203)


def test_soft_then_permanent_delete(client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema(SUBJECT, _schema())
    assert client.delete_subject(SUBJECT) == [1]
    assert client.get_subjects() == []
    assert client.delete_subject(SUBJECT, permanent=True) == [1]
    # Ids are stable: registering the same schema again gives the same id.
    assert client.register_schema("other-value", _schema()) == schema_id


def test_basic_auth_accepts_the_right_password_only() -> None:
    with FakeSchemaRegistry(auth=("exporter", "s3cret")) as sr:
        good = registry_client(sr.url, user_info="exporter:s3cret", max_retries=0)
        assert good.get_subjects() == []
        for info in ("exporter:wrong", None):
            bad = registry_client(sr.url, user_info=info, max_retries=0)
            with pytest.raises(SchemaRegistryError) as err:
                bad.get_subjects()
            assert err.value.http_status_code == 401


# --------------------------------------------------------------------------------------------
# The Confluent framing
# --------------------------------------------------------------------------------------------


def test_confluent_value_is_magic_id_and_our_body_and_decodes_with_avro_deserializer(
        registry: FakeSchemaRegistry, client: SchemaRegistryClient) -> None:
    framing = ConfluentFraming(client, url=registry.url)
    value = framing.encode_object(TOPIC, "billing_record", BILLING)
    schema_id = client.get_latest_version(SUBJECT).schema_id
    assert value[:1] == b"\x00" and int.from_bytes(value[1:5], "big") == schema_id
    assert value[5:] == body_of(value) == load_schema("billing_record").encode_object(BILLING)
    # The reference serializer produces the same bytes, and its deserializer reads ours.
    reference = AvroSerializer(client, load_schema("billing_record").text)
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    assert reference(BILLING.to_avro(), ctx) == value
    assert BillingRecord.from_avro(AvroDeserializer(client)(value, ctx)) == BILLING
    assert BillingRecord.from_avro(framing.decode(value)) == BILLING
    assert framing.schema_of(value) == "io.github.chargeback.billing.v1.BillingRecord"


def test_the_registry_is_asked_once_per_topic_and_schema(registry: FakeSchemaRegistry,
                                                         client: SchemaRegistryClient) -> None:
    framing = ConfluentFraming(client, url=registry.url)
    values = set()
    for i in range(50):
        values.add(framing.encode(TOPIC, "billing_record", {**BILLING.to_avro(), "revision": i}))
    framing.encode_object("chargeback.manifests.v1", "period_manifest", MANIFEST)
    registers = [p for m, p in registry.requests if m == "POST"]
    assert len(values) == 50
    assert registers == [f"/subjects/{SUBJECT}/versions", "/subjects/chargeback.manifests.v1-value/versions"]


def test_concurrent_first_encodes_register_once(registry: FakeSchemaRegistry,
                                                client: SchemaRegistryClient) -> None:
    framing = ConfluentFraming(client, url=registry.url)
    out: list[bytes] = []

    def encode() -> None:
        out.append(framing.encode_object(TOPIC, "billing_record", BILLING))

    threads = [threading.Thread(target=encode) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(set(out)) == 1 and len(out) == 8
    assert sum(1 for m, _ in registry.requests if m == "POST") == 1


def test_manifests_round_trip(registry: FakeSchemaRegistry, client: SchemaRegistryClient) -> None:
    framing = ConfluentFraming(client, url=registry.url)
    value = framing.encode_object("chargeback.manifests.v1", "period_manifest", MANIFEST)
    assert PeriodManifest.from_avro(framing.decode(value)) == MANIFEST


def test_without_auto_registration_an_unregistered_schema_is_a_sink_error(
        registry: FakeSchemaRegistry, client: SchemaRegistryClient) -> None:
    framing = ConfluentFraming(client, url=registry.url, auto_register=False)
    with pytest.raises(SinkError) as err:
        framing.encode_object(TOPIC, "billing_record", BILLING)
    assert f"not registered under subject {SUBJECT}" in str(err.value)
    assert "auto-registration is off" in str(err.value)
    with pytest.raises(SinkError, match="auto-registration is off"):
        framing.schema_id(TOPIC, "billing_record")
    schema_id = client.register_schema(SUBJECT, _schema())
    seen = len(registry.requests)
    assert framing.schema_id(TOPIC, "billing_record") == schema_id
    assert framing.encode_object(TOPIC, "billing_record", BILLING)[1:5] == schema_id.to_bytes(4, "big")
    # Only lookups from here on, never a registration.
    assert {(m, p) for m, p in registry.requests[seen:]} == {("POST", f"/subjects/{SUBJECT}")}


def test_a_rejected_schema_is_one_clear_sink_error(registry: FakeSchemaRegistry,
                                                   client: SchemaRegistryClient) -> None:
    # The subject already holds a version where revision is a string: ours cannot read it.
    client.register_schema(SUBJECT, Schema(_retyped("revision", "string"), "AVRO"))
    framing = ConfluentFraming(client, url=registry.url)
    with pytest.raises(SinkError) as err:
        framing.encode_object(TOPIC, "billing_record", BILLING)
    message = str(err.value)
    assert "HTTP 409" in message and SUBJECT in message and "BillingRecord" in message
    assert "\n" not in message and not isinstance(err.value, SinkUnavailable)
    with pytest.raises(SinkError, match="HTTP 409"):
        framing.schema_id(TOPIC, "billing_record")


def test_wrong_credentials_are_a_sink_error_without_the_secret() -> None:
    with FakeSchemaRegistry(auth=("exporter", "right")) as sr:
        config = SchemaRegistryConfig(url=sr.url, basic_auth_user_info=SecretStr("exporter:hunter2"))
        framing = ConfluentFraming.from_config(config)
        with pytest.raises(SinkError) as err:
            framing.encode_object(TOPIC, "billing_record", BILLING)
        assert "HTTP 401" in str(err.value) and "hunter2" not in str(err.value)
        ok = ConfluentFraming.from_config(SchemaRegistryConfig(url=sr.url,
                                                               basic_auth_user_info=SecretStr("exporter:right")))
        assert ok.encode_object(TOPIC, "billing_record", BILLING)[:1] == b"\x00"


def test_registry_outage_is_retryable(registry: FakeSchemaRegistry, client: SchemaRegistryClient) -> None:
    registry.fail_next(503)
    framing = ConfluentFraming(client, url=registry.url)
    with pytest.raises(SinkUnavailable, match="HTTP 503"):
        framing.encode_object(TOPIC, "billing_record", BILLING)
    assert framing.encode_object(TOPIC, "billing_record", BILLING)[:1] == b"\x00"  # next call works


def test_unreachable_registry_is_retryable_and_names_the_url_without_credentials() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:pw@127.0.0.1:{port}"
    framing = ConfluentFraming(registry_client(url, max_retries=0, timeout=2), url=url)
    with pytest.raises(SinkUnavailable) as err:
        framing.encode_object(TOPIC, "billing_record", BILLING)
    assert f"127.0.0.1:{port}" in str(err.value) and "pw" not in str(err.value)


def test_decoding_resolves_an_older_writer_schema_registered_under_the_subject(
        client: SchemaRegistryClient, registry: FakeSchemaRegistry) -> None:
    older = _without("price_version")
    schema_id = client.register_schema(SUBJECT, Schema(older, "AVRO"))
    datum = {k: v for k, v in BILLING.to_avro().items() if k != "price_version"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(older)), datum)
    value = b"\x00" + schema_id.to_bytes(4, "big") + buf.getvalue()
    decoded = ConfluentFraming(client, url=registry.url).decode(value)
    assert decoded["price_version"] is None and decoded["record_id"] == BILLING.record_id


@pytest.mark.parametrize("value,message", [
    (b"\xc3\x01" + bytes(9), "no magic byte 0"),
    (b"\x00\x00\x00\x03\xe7" + bytes(3), "does not know schema id 999"),
])
def test_decoding_foreign_values_is_an_encoding_error(registry: FakeSchemaRegistry,
                                                      client: SchemaRegistryClient, value: bytes,
                                                      message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        ConfluentFraming(client, url=registry.url).decode(value)


def test_client_configuration_errors_name_the_setting_not_the_value() -> None:
    with pytest.raises(ConfigError, match="user:password") as err:
        registry_client("http://127.0.0.1:1", user_info="no-colon-secret")
    assert "no-colon-secret" not in str(err.value)
    with pytest.raises(ConfigError, match=r"kafka\.schema_registry: Invalid url"):
        registry_client("ftp://127.0.0.1:1")


def test_redact_url_drops_user_info() -> None:
    assert redact_url("https://user:p%40ss@sr.example:8081/base") == "https://sr.example:8081/base"
    assert redact_url("http://127.0.0.1:8081") == "http://127.0.0.1:8081"

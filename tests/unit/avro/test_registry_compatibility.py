"""Subject compatibility: the fake's `/config/{subject}` API as Confluent's Schema Registry serves
it, and the Confluent framing setting the configured level (BACKWARD_TRANSITIVE by default) on
each subject before it first registers a schema there."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from exporter.avro import load_schema
from exporter.avro.registry import ConfluentFraming, registry_client
from exporter.config import SchemaRegistryConfig, load_config
from exporter.errors import ConfigError
from tests.fakes.schema_registry import FakeSchemaRegistry
from tests.rigs.samples import BILLING
from tests.unit.avro.conftest import SUBJECT, TOPIC

REFUSED = "schema registry refused the subject compatibility"


def call(registry: FakeSchemaRegistry, method: str, path: str,
         body: dict[str, Any] | None = None) -> tuple[int, Any]:
    response = requests.request(method, registry.url + path, json=body, timeout=5,
                                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    return response.status_code, response.json()


def config_requests(registry: FakeSchemaRegistry) -> list[tuple[str, str]]:
    return [(m, p) for m, p in registry.requests if p.startswith("/config")]


# --------------------------------------------------------------------------------------------
# The fake's /config/{subject}, as Confluent documents and implements it
# --------------------------------------------------------------------------------------------


def test_subject_config_read_update_and_delete(registry: FakeSchemaRegistry) -> None:
    assert call(registry, "GET", f"/config/{SUBJECT}") == (
        404, {"error_code": 40408, "message": f"Subject '{SUBJECT}' does not have subject-level "
                                              "compatibility configured"})
    assert call(registry, "GET", f"/config/{SUBJECT}?defaultToGlobal=true") == (
        200, {"compatibilityLevel": "BACKWARD"})
    # A subject that has no version yet can be configured; level names are case-insensitive and
    # the answer echoes the subject's configuration.
    assert call(registry, "PUT", f"/config/{SUBJECT}", {"compatibility": "backward_transitive"}) == (
        200, {"compatibility": "BACKWARD_TRANSITIVE"})
    # An update without a level keeps the level and sets the other fields.
    assert call(registry, "PUT", f"/config/{SUBJECT}", {"normalize": True}) == (
        200, {"compatibility": "BACKWARD_TRANSITIVE", "normalize": True})
    assert call(registry, "GET", f"/config/{SUBJECT}") == (
        200, {"compatibilityLevel": "BACKWARD_TRANSITIVE", "normalize": True})
    status, body = call(registry, "PUT", f"/config/{SUBJECT}", {"compatibility": "SOMETIMES"})
    assert (status, body["error_code"]) == (422, 42203)
    assert call(registry, "DELETE", f"/config/{SUBJECT}") == (
        200, {"compatibilityLevel": "BACKWARD_TRANSITIVE", "normalize": True})
    assert call(registry, "DELETE", f"/config/{SUBJECT}") == (
        404, {"error_code": 40401, "message": f"Subject '{SUBJECT}' not found."})


def test_an_authorizer_can_deny_compatibility_writes_but_not_registration() -> None:
    with FakeSchemaRegistry(denied={"SUBJECT_COMPATIBILITY_WRITE"}) as sr:
        client = registry_client(sr.url, max_retries=0)
        with pytest.raises(SchemaRegistryError) as err:
            client.set_compatibility(SUBJECT, "FULL")
        assert (err.value.http_status_code, err.value.error_code) == (403, 40301)
        assert "SUBJECT_COMPATIBILITY_WRITE" in str(err.value.error_message)
        assert SUBJECT in str(err.value.error_message)
        assert call(sr, "DELETE", f"/config/{SUBJECT}")[0] == 403
        assert call(sr, "GET", f"/config/{SUBJECT}")[0] == 404  # reading is still allowed
        assert ConfluentFraming(client, url=sr.url, compatibility=None).schema_id(
            TOPIC, "billing_record") == 1


# --------------------------------------------------------------------------------------------
# The framing sets the level before the first registration
# --------------------------------------------------------------------------------------------


def test_first_registration_sets_backward_transitive_first(registry: FakeSchemaRegistry,
                                                           client: SchemaRegistryClient) -> None:
    framing = ConfluentFraming(client, url=registry.url)
    framing.encode_object(TOPIC, "billing_record", BILLING)
    framing.encode_object(TOPIC, "billing_record", BILLING)
    assert config_requests(registry) == [("GET", f"/config/{SUBJECT}"), ("PUT", f"/config/{SUBJECT}")]
    put = registry.requests.index(("PUT", f"/config/{SUBJECT}"))
    assert put < registry.requests.index(("POST", f"/subjects/{SUBJECT}/versions"))
    assert client.get_compatibility(SUBJECT) == "BACKWARD_TRANSITIVE"


def test_a_subject_already_at_the_level_is_not_written(registry: FakeSchemaRegistry,
                                                       client: SchemaRegistryClient) -> None:
    client.set_compatibility(SUBJECT, "BACKWARD_TRANSITIVE")
    seen = len(registry.requests)
    ConfluentFraming(client, url=registry.url).schema_id(TOPIC, "billing_record")
    assert [r for r in config_requests(registry) if registry.requests.index(r) >= seen] == [
        ("GET", f"/config/{SUBJECT}")]


def test_the_level_is_configurable_and_can_be_left_alone(registry: FakeSchemaRegistry,
                                                         client: SchemaRegistryClient) -> None:
    cfg = load_config(environ={}, overrides={"kafka": {
        "framing": "confluent",
        "schema_registry": {"url": registry.url, "compatibility": "full_transitive"}}})
    assert cfg.kafka.schema_registry is not None
    assert cfg.kafka.schema_registry.compatibility == "FULL_TRANSITIVE"
    ConfluentFraming.from_config(cfg.kafka.schema_registry).schema_id(TOPIC, "billing_record")
    assert client.get_compatibility(SUBJECT) == "FULL_TRANSITIVE"
    assert SchemaRegistryConfig(url=registry.url).compatibility == "BACKWARD_TRANSITIVE"
    with pytest.raises(ConfigError, match=r"kafka\.schema_registry\.compatibility"):
        load_config(environ={}, overrides={"kafka": {"schema_registry": {
            "url": registry.url, "compatibility": "SOMETIMES"}}})

    untouched = "other-value"
    ConfluentFraming(client, url=registry.url, compatibility=None).schema_id("other", "billing_record")
    assert not [r for r in config_requests(registry) if untouched in r[1]]


def test_without_auto_registration_the_subject_config_is_not_touched(
        registry: FakeSchemaRegistry, client: SchemaRegistryClient) -> None:
    client.register_schema(SUBJECT, Schema(load_schema("billing_record").text, "AVRO"))
    ConfluentFraming(client, url=registry.url, auto_register=False).schema_id(TOPIC, "billing_record")
    assert config_requests(registry) == []


def test_a_refused_level_is_one_warning_and_registration_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    with FakeSchemaRegistry(denied={"SUBJECT_COMPATIBILITY_WRITE"}) as sr:
        client = registry_client(sr.url, max_retries=0)
        framing = ConfluentFraming(client, url=sr.url)
        with caplog.at_level(logging.WARNING, logger="exporter.registry"):
            value = framing.encode_object(TOPIC, "billing_record", BILLING)
            framing.encode_object(TOPIC, "billing_record", BILLING)
        assert value[:1] == b"\x00"
        [line] = [r for r in caplog.records if r.getMessage() == REFUSED]
        assert (line.subject, line.compatibility, line.current_compatibility, line.status) == (  # type: ignore[attr-defined]
            SUBJECT, "BACKWARD_TRANSITIVE", "BACKWARD (global)", 403)
        assert "40301" in line.error and "\n" not in line.error  # type: ignore[attr-defined]

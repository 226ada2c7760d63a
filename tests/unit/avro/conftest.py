"""The registry fake and a real `SchemaRegistryClient` on it, for the framing and registry tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from exporter.avro.registry import registry_client
from tests.fakes.schema_registry import FakeSchemaRegistry

TOPIC = "chargeback.records.v1"
SUBJECT = f"{TOPIC}-value"


@pytest.fixture
def registry() -> Iterator[FakeSchemaRegistry]:
    with FakeSchemaRegistry() as sr:
        yield sr


@pytest.fixture
def client(registry: FakeSchemaRegistry) -> SchemaRegistryClient:
    # No client-side retries: they sleep on the wall clock.
    return registry_client(registry.url, max_retries=0)

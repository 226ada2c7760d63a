"""Confluent wire format through a (fake, faithful) Schema Registry, end to end on noida-db."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from exporter.avro import schema_text
from exporter.clock import FakeClock
from exporter.config import Config
from exporter.consumer import read_records
from exporter.errors import SinkError
from exporter.kafka import read_topic
from exporter.periods import Period
from exporter.wiring import build_checkpoints, build_codec, build_pipeline, build_sink
from tests.fakes.memory import FakeSource
from tests.fakes.schema_registry import FakeSchemaRegistry
from tests.rigs.kafka import T0, hours, publish_periods

H = 3600
USER, PASSWORD = "exporter", "sr-pass-8d1e"


def confluent(kafka_config: Callable[..., Config], sr: FakeSchemaRegistry) -> Config:
    return kafka_config(kafka={"framing": "confluent", "schema_registry": {
        "url": sr.url, "basic_auth_user_info": f"{USER}:{PASSWORD}"}})


def test_records_round_trip_through_the_registry(kafka_config: Callable[..., Config]) -> None:
    with FakeSchemaRegistry(auth=(USER, PASSWORD)) as sr:
        cfg = confluent(kafka_config, sr)
        clock = FakeClock(T0 + 3 * H)
        publish_periods(cfg, clock, hours(2))
        topic = cfg.kafka.topics.records
        subjects = requests.get(f"{sr.url}/subjects", auth=(USER, PASSWORD), timeout=5).json()
        assert f"{topic}-value" in subjects
        assert f"{cfg.kafka.topics.manifests}-value" in subjects
        # our decoder (ids resolved through the registry)
        ours = list(read_records(cfg.kafka, build_codec(cfg)))
        assert len(ours) == 8
        # and a stock Confluent consumer stack, as a billing platform would run it
        client = SchemaRegistryClient({"url": sr.url, "basic.auth.user.info": f"{USER}:{PASSWORD}"})
        deser = AvroDeserializer(client)
        values = [m.value for m in read_topic(cfg.kafka, topic)]
        assert all(v is not None and v[:1] == b"\x00" for v in values)
        decoded = [deser(v, SerializationContext(topic, MessageField.VALUE)) for v in values]
        assert {d["record_id"] for d in decoded} == {r.record_id for r in ours}
        assert build_checkpoints(cfg, clock).read().last_period_end == T0 + 2 * H


def test_registry_rejection_is_one_clear_error_and_nothing_is_published(
        kafka_config: Callable[..., Config]) -> None:
    with FakeSchemaRegistry(auth=(USER, PASSWORD)) as sr:
        cfg = confluent(kafka_config, sr)
        # an earlier, released schema without `revision`: ours adds it without a default,
        # which BACKWARD compatibility forbids
        old = json.loads(schema_text("billing_record"))
        old["fields"] = [f for f in old["fields"] if f["name"] != "revision"]
        r = requests.post(f"{sr.url}/subjects/{cfg.kafka.topics.records}-value/versions",
                          json={"schema": json.dumps(old)}, auth=(USER, PASSWORD), timeout=5)
        assert r.status_code == 200
        clock = FakeClock(T0 + 3 * H)
        pipeline = build_pipeline(cfg, clock, source=FakeSource(clock))
        sink = build_sink(cfg, clock)
        sink.start()
        with pytest.raises(SinkError) as err:
            pipeline.export(Period(T0, T0 + H), sink, cfg.kafka.transactional_id)
        sink.close()
        message = str(err.value)
        assert "\n" not in message and PASSWORD not in message
        assert "409" in message or "incompatible" in message.lower()
        assert build_checkpoints(cfg, clock).read() is None
        assert list(read_topic(cfg.kafka, cfg.kafka.topics.records)) == []

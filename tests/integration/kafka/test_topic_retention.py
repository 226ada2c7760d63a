"""Topic retention on a real broker: every topic is created with an explicit retention (unlimited
by default), and an existing topic that keeps data for less time than configured is reported at
start, in one log line per topic and in `chargeback_topic_retention_short`."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from prometheus_client import CollectorRegistry

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import FakeClock
from exporter.config import Config
from exporter.metrics import Metrics
from exporter.wiring import build_sink
from tests.rigs.kafka import T0, make_config

WEEK_MS = str(7 * 86400 * 1000)
DAY_MS = str(86400 * 1000)
SHORT = "topic retention shorter than configured"


def described(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configuration as the broker describes it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)],
                                      request_timeout=10).values()
    return {name: str(entry.value) for name, entry in future.result().items()}


def create(bootstrap: str, topic: str, config: dict[str, str] | None = None,
           partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})],
                                   request_timeout=10).values()
    future.result()


def start_once(cfg: Config, metrics: Metrics | None = None) -> None:
    sink = build_sink(cfg, FakeClock(T0), metrics)
    sink.start()
    sink.close()


def short_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == SHORT]


def fields(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {n: getattr(record, n, None) for n in names}


def test_every_topic_is_created_keeping_everything(noida: LocalBroker,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(noida.bootstrap)
    with caplog.at_level(logging.INFO, logger="exporter.kafka"):
        start_once(cfg)
    t = cfg.kafka.topics
    for topic, policy in ((t.records, "delete"), (t.manifests, "compact"), (t.checkpoint, "compact")):
        conf = described(noida.bootstrap, topic)
        assert (conf["cleanup.policy"], conf["retention.ms"], conf["retention.bytes"]) == \
            (policy, "-1", "-1"), topic
    created = [r for r in caplog.records if r.getMessage() == "topic created"]
    assert {r.topic for r in created} == {t.records, t.manifests, t.checkpoint}  # type: ignore[attr-defined]
    assert all(r.retention_ms == "-1" for r in created)  # type: ignore[attr-defined]
    assert not short_lines(caplog)


def test_configured_retention_is_applied_at_creation(noida: LocalBroker) -> None:
    month = str(400 * 86400 * 1000)
    cfg = make_config(noida.bootstrap, kafka={"topic_configs": {
        "records": {"retention.ms": month, "retention.bytes": 10**12}}})
    start_once(cfg)
    conf = described(noida.bootstrap, cfg.kafka.topics.records)
    assert (conf["retention.ms"], conf["retention.bytes"]) == (month, str(10**12))
    assert described(noida.bootstrap, cfg.kafka.topics.manifests)["retention.ms"] == "-1"


def test_existing_topic_with_shorter_retention_is_reported_once_per_topic(
        noida: LocalBroker, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(noida.bootstrap)
    t = cfg.kafka.topics
    create(noida.bootstrap, t.records)  # the broker's default: 7 days
    create(noida.bootstrap, t.manifests, {"cleanup.policy": "compact,delete", "retention.ms": DAY_MS,
                                          "retention.bytes": "1073741824"})
    # Compaction alone never deletes the newest value of a key: retention does not apply.
    create(noida.bootstrap, t.checkpoint, {"cleanup.policy": "compact", "retention.ms": WEEK_MS}, 1)
    metrics = Metrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="exporter.kafka"):
        start_once(cfg, metrics)
    lines = {r.topic: r for r in short_lines(caplog)}  # type: ignore[attr-defined]
    assert len(short_lines(caplog)) == 2 and set(lines) == {t.records, t.manifests}
    assert fields(lines[t.records], "retention_ms", "configured_retention_ms", "retention_bytes",
                  "configured_retention_bytes") == {
        "retention_ms": WEEK_MS, "configured_retention_ms": "-1",
        "retention_bytes": None, "configured_retention_bytes": None}
    assert fields(lines[t.manifests], "retention_ms", "retention_bytes", "configured_retention_bytes") \
        == {"retention_ms": DAY_MS, "retention_bytes": "1073741824", "configured_retention_bytes": "-1"}
    sample = metrics.registry.get_sample_value

    def short(topic: str, setting: str) -> float | None:
        return sample("chargeback_topic_retention_short", {"topic": topic, "config": setting})

    assert short(t.records, "retention.ms") == 1 and short(t.records, "retention.bytes") == 0
    assert short(t.manifests, "retention.ms") == 1 and short(t.manifests, "retention.bytes") == 1
    assert short(t.checkpoint, "retention.ms") == 0


def test_existing_topic_keeping_longer_than_configured_is_fine(
        noida: LocalBroker, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(noida.bootstrap, kafka={"topic_configs": {"records": {"retention.ms": WEEK_MS}}})
    create(noida.bootstrap, cfg.kafka.topics.records, {"retention.ms": str(30 * 86400 * 1000)})
    with caplog.at_level(logging.WARNING, logger="exporter.kafka"):
        start_once(cfg)
    assert not short_lines(caplog)

"""The same export path on a second Kafka implementation (Tansu).

Tansu does not hide aborted records from read_committed consumers, so only the committed path,
topic administration and reading back are checked here; abort and fencing semantics are proven
on noida-db (test_exactly_once.py).
"""

from __future__ import annotations

from collections import Counter

import pytest

from chargeback_simulator.localbroker import LocalBroker
from exporter.clock import FakeClock
from exporter.consumer import latest_records, read_manifests, read_records
from exporter.errors import SinkError
from exporter.wiring import build_checkpoints, build_codec, build_sink
from tests.rigs.kafka import T0, hours, make_config, publish_periods

H = 3600


def test_commit_path_and_read_back_on_tansu(tansu: LocalBroker) -> None:
    cfg = make_config(tansu.bootstrap)
    clock = FakeClock(T0 + 4 * H)
    publish_periods(cfg, clock, hours(3))
    codec = build_codec(cfg)
    records = list(read_records(cfg.kafka, codec))
    keys = Counter((r.period_start, r.workload_name, r.resource) for r in records)
    assert len(keys) == 12 and set(keys.values()) == {1}
    assert len(latest_records(records)) == 12
    assert len(list(read_manifests(cfg.kafka, codec))) == 3
    assert build_checkpoints(cfg, clock).read().last_period_end == T0 + 3 * H


def test_topics_are_verified_on_tansu(tansu: LocalBroker) -> None:
    cfg = make_config(tansu.bootstrap)
    clock = FakeClock(T0)
    sink = build_sink(cfg, clock)
    sink.start()  # creates the three topics
    sink.close()
    again = build_sink(cfg, clock)
    again.start()  # finds and verifies them
    again.close()
    missing = make_config(tansu.bootstrap, kafka={"create_topics": False})
    with pytest.raises(SinkError, match="do not exist"):
        build_sink(missing, clock).start()


def test_topic_retention_on_tansu(tansu: LocalBroker, caplog: pytest.LogCaptureFixture) -> None:
    """Tansu keeps the configs a topic was created with and describes only those: ours are
    created explicit, and a topic created without them cannot be checked, which is said."""
    import logging

    from tests.integration.kafka.test_topic_retention import create, described, start_once

    cfg = make_config(tansu.bootstrap)
    start_once(cfg)
    for topic in (cfg.kafka.topics.records, cfg.kafka.topics.manifests, cfg.kafka.topics.checkpoint):
        conf = described(tansu.bootstrap, topic)
        assert (conf["retention.ms"], conf["retention.bytes"]) == ("-1", "-1"), topic
    bare = make_config(tansu.bootstrap)
    create(tansu.bootstrap, bare.kafka.topics.records)
    with caplog.at_level(logging.WARNING, logger="exporter.kafka"):
        start_once(bare)
    [line] = [r for r in caplog.records if r.getMessage() == "topic retention not reported by the broker"]
    assert line.topic == bare.kafka.topics.records  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage() == "topic retention shorter than configured"]

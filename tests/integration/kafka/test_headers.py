"""The headers of the three topics, as a consumer reads them from a real broker, and what
`schemas/README.md` says of them."""

from __future__ import annotations

from chargeback_simulator.localbroker import LocalBroker
from exporter import __version__
from exporter.clock import FakeClock
from exporter.kafka import read_topic
from tests.rigs.kafka import T0, hours, make_config, publish_periods
from tests.rigs.paths import ROOT

README = ROOT / "schemas" / "README.md"


def test_records_and_manifests_carry_published_at_and_the_version_checkpoints_a_batch_id(
        noida: LocalBroker) -> None:
    cfg = make_config(noida.bootstrap)
    clock = FakeClock(T0 + 3 * 3600 + 0.25)
    publish_periods(cfg, clock, hours(2))
    topics = cfg.kafka.topics
    published_at = str(int(clock.time() * 1000)).encode()
    for topic, schema in ((topics.records, b"billing_record"), (topics.manifests, b"period_manifest")):
        messages = list(read_topic(cfg.kafka, topic))
        assert messages, topic
        for m in messages:
            assert dict(m.headers) == {"published_at": published_at, "schema": schema,
                                       "exporter_version": __version__.encode()}, topic
    checkpoints = list(read_topic(cfg.kafka, topics.checkpoint))
    assert len(checkpoints) == 2 and all(set(m.headers) == {"batch_id"} for m in checkpoints)
    assert checkpoints[0].headers["batch_id"] != checkpoints[1].headers["batch_id"]

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert ("Every record and manifest message has the headers `published_at` (wall-clock publication "
            "time, UTC epoch milliseconds as ASCII digits), `exporter_version` and `schema`") in text
    assert "Checkpoint messages carry the header `batch_id`, a fresh id per transaction" in text

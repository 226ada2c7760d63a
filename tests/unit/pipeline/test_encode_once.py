"""The pipeline encodes each billing record once per period: the manifests' content hashes
and the published values share the bodies, and stay consistent after a revision bump."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fleets import exporter_config, period, write_rate_card
from bench.record import record
from bench.replay import ReplayServer
from exporter.avro import AvroSchema, body_of, load_schema
from exporter.clock import FakeClock
from exporter.manifests import content_hash_of_bodies
from exporter.pipeline import Prior
from exporter.wiring import build_pipeline

TINY = 40


@pytest.fixture(scope="module")
def replay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("rec")
    record(TINY, directory)
    with ReplayServer(directory) as server:
        yield server.url


@pytest.fixture
def record_encodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """record_ids passed to the billing-record writers (the real ones run)."""
    seen: list[str] = []
    real = AvroSchema.encoder
    schema = load_schema("billing_record")

    def spy(self: AvroSchema, *, attr: bool = True) -> Any:
        write = real(self, attr=attr)
        if self is not schema:
            return write

        def watched(obj: Any) -> bytes:
            seen.append(obj.record_id if attr else obj["record_id"])
            return write(obj)

        return watched

    monkeypatch.setattr(AvroSchema, "encoder", spy)
    return seen


def pipeline(url: str, tmp_path: Path) -> Any:
    cfg = exporter_config(url, "127.0.0.1:9", "t", write_rate_card(tmp_path))
    return build_pipeline(cfg, FakeClock(period(0).end + 600))


def published(p: Any, prior: dict[str, Prior] | None = None) -> tuple[Any, dict[bytes, bytes]]:
    """The export's summary and its record values by key, generated as a sink would."""
    batch = p.batch(period(0), "t", prior=prior)
    values = {m.key: m.value for m in batch.messages() if m.topic == p.codec.topics.records}
    return batch.summary, values


def check_hashes(manifests: Any, values: dict[bytes, bytes], codec: Any) -> None:
    for m in manifests:
        ids = sorted(k.decode() for k, v in values.items()
                     if codec.decode_record(v).cluster == m.cluster)
        assert m.record_count == len(ids)
        assert m.content_hash == content_hash_of_bodies(body_of(values[i.encode()]) for i in ids)


def test_each_record_is_encoded_once(replay_url: str, tmp_path: Path,
                                     record_encodes: list[str]) -> None:
    p = pipeline(replay_url, tmp_path)
    summary, values = published(p)
    assert values and sorted(record_encodes) == sorted(k.decode() for k in values)
    assert summary.records == len(values)
    check_hashes(summary.manifests, values, p.codec)


def test_a_revision_bump_publishes_the_bodies_it_hashed(replay_url: str, tmp_path: Path) -> None:
    p = pipeline(replay_url, tmp_path)
    first = p.compute(period(0))
    cluster = first.manifests[0].cluster
    summary, values = published(p, {cluster: Prior(revision=3, content_hash="0" * 64)})
    check_hashes(summary.manifests, values, p.codec)
    bumped = [r for r in first.records if r.cluster == cluster]
    assert bumped and {p.codec.decode_record(values[r.record_id.encode()]).revision
                       for r in bumped} == {4}
    assert summary.changed[0] == cluster

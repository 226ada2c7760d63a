"""Backfill settles a commit whose outcome is unknown before publishing anything again."""

from __future__ import annotations

from collections import Counter

from exporter.backfill.runner import default_sink
from exporter.clock import Clock
from exporter.config import Config
from exporter.kafka import KafkaPeriodSink
from exporter.periods import iso
from exporter.sink import PeriodSink
from tests.fakes.sinks import LostAck
from tests.rigs.backfill import T0, H, Rig


def test_backfill_settles_an_unknown_commit_instead_of_publishing_twice(rig: Rig) -> None:
    """The worker's in-doubt commit (the answer to EndTxn lost) under backfill: the period is
    found committed on the backfill's checkpoint, not sent again."""
    holder: dict[str, LostAck] = {}

    def lossy(cfg: Config, clock: Clock, instance: str) -> PeriodSink:
        sink = default_sink(cfg, clock, instance)
        assert isinstance(sink, KafkaPeriodSink)
        holder["sink"] = LostAck(sink, lose={2})
        return holder["sink"]

    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H), sink_factory=lossy)
    assert res.code == 0, res.err
    records = Counter((r.period, r.cluster, r.workload_name, r.resource, r.revision)
                      for r, _ in rig.records())
    assert records and set(records.values()) == {1}, "every record published once"
    manifests = Counter((m.period, m.cluster, m.revision) for m in rig.manifests())
    assert len(manifests) == 6 and set(manifests.values()) == {1}  # 3 periods x 2 clusters
    assert holder["sink"].recoveries == 1


def test_an_unknown_commit_that_did_not_land_is_published_once(rig: Rig) -> None:
    """The other outcome: the transaction was aborted; the batch is published again, once."""
    holder: dict[str, LostAck] = {}

    def lossy(cfg: Config, clock: Clock, instance: str) -> PeriodSink:
        sink = default_sink(cfg, clock, instance)
        assert isinstance(sink, KafkaPeriodSink)
        holder["sink"] = LostAck(sink, lose={2}, commit=False)
        return holder["sink"]

    res = rig.backfill("--from", iso(T0 + 3 * H), "--to", iso(T0 + 6 * H), sink_factory=lossy)
    assert res.code == 0, res.err
    records = Counter((r.period, r.cluster, r.workload_name, r.resource, r.revision)
                      for r, _ in rig.records())
    assert records and set(records.values()) == {1}
    manifests = Counter((m.period, m.cluster, m.revision) for m in rig.manifests())
    assert len(manifests) == 6 and set(manifests.values()) == {1}
    assert holder["sink"].recoveries == 1 and holder["sink"].publishes == 4
